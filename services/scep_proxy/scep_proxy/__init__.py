"""scep-proxy: forwards hosts' SCEP requests to the admin's CA and probes CAs for admin-config."""
