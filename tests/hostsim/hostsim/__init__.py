"""Simulated Apple hosts and a fake APNs, to test the MDM and SCEP flows without devices."""
