-- Failed authentication per client address (mdmscep_common/failure_limits.py), shared by every
-- gunicorn worker and replica: `failures` is a count that decays by one every refill period;
-- a client is refused while it is over its limit. Rows of clients that stopped failing are
-- deleted a few at a time by the statement that records the next failure (updated_at index).

-- admin-config: bearer tokens that did not authenticate.
CREATE TABLE admin_auth_failures (
    client      text PRIMARY KEY,
    failures    double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_auth_failures_updated_idx ON admin_auth_failures (updated_at);

-- mdm-endpoint: wrong secrets in GET /mdm/enroll?secret=...
CREATE TABLE enroll_failures (
    client      text PRIMARY KEY,
    failures    double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enroll_failures_updated_idx ON enroll_failures (updated_at);
