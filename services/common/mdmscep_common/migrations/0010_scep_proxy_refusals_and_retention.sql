-- scep-proxy: requests the processor refused, per client address (scep_proxy/client_limits.py,
-- mdmscep_common/failure_limits.py), shared by every gunicorn worker and replica: `failures` is
-- a count that decays by one every refill period; a client is answered 429 while it is over its
-- limit. Rows of clients that stopped being refused are deleted a few at a time by the statement
-- that records the next refusal (updated_at index).
CREATE TABLE scep_proxy_refusals (
    client      text PRIMARY KEY,
    failures    double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scep_proxy_refusals_updated_idx ON scep_proxy_refusals (updated_at);

-- Retention of ca_requests (docs/operations.md "Retention"): scep-proxy grpc deletes rows older
-- than CA_REQUEST_RETENTION_DAYS in batches, found by their creation time. The statistics'
-- index (ca_name, created_at) cannot serve a condition on created_at alone.
CREATE INDEX ca_requests_created_idx ON ca_requests (created_at);

-- Rows are only ever added and, once old, deleted: vacuum after 5 % of the table changed, so
-- the space pruning frees is reused and the table stays flat.
ALTER TABLE ca_requests SET (autovacuum_vacuum_scale_factor = 0.05);
