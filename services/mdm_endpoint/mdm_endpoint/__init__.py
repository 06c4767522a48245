"""mdm-endpoint: Apple MDM enrollment, check-in and commands; the Commander; APNs pushes."""
