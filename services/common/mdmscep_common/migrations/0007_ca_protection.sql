-- Protecting the admin's CA: per-CA limits (admin-config), request outcomes (scep-proxy) and
-- issuance pacing (profile-processor).

ALTER TABLE certificate_authorities
    ADD COLUMN max_concurrent_requests integer NOT NULL DEFAULT 4,
    -- NULL: derived from max_concurrent_requests.
    ADD COLUMN max_issuance_per_second real;

-- scep-proxy: one row per PKIOperation forwarded (stats over the last hour; pruned after a day).
CREATE TABLE ca_requests (
    id          bigserial PRIMARY KEY,
    ca_name     text NOT NULL,
    outcome     text NOT NULL,  -- issued | scep_failure | pending | upstream_error | timeout | busy
    latency_ms  real NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ca_requests_ca_created_idx ON ca_requests (ca_name, created_at);

-- profile-processor: the next free issuance slot per CA, shared by every processor replica.
CREATE TABLE ca_pacing (
    ca_id        bigint PRIMARY KEY,
    next_slot_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE host_profiles
    -- A send postponed for pacing already holds its slot: when due it is sent without another.
    ADD COLUMN paced_until timestamptz,
    -- The CA's answer to this attempt's PKIOperation (scep.result), kept for the final detail.
    ADD COLUMN ca_answer text;
