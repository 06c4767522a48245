-- Host facts (mdm_endpoint/host_facts.py): what each host answered to DeviceInformation, asked at
-- enrollment and then every HOST_FACTS_INTERVAL. serial_number, device_name, model and
-- os_version already come with Authenticate; DeviceInformation refreshes them and adds the
-- product name (the hardware model identifier, e.g. "Mac15,3", "iPhone16,1"). Applied inside the
-- service's schema (mdm_endpoint).

ALTER TABLE hosts
    ADD COLUMN product_name        text NOT NULL DEFAULT '',
    -- When the host last answered DeviceInformation (null: never yet).
    ADD COLUMN facts_updated_at    timestamptz,
    -- When DeviceInformation was last queued for it: the refresh asks again after the interval.
    ADD COLUMN facts_requested_at  timestamptz;

-- The refresh's scan: enrolled hosts by when they were last asked (never first).
CREATE INDEX hosts_facts_due_idx ON hosts (facts_requested_at NULLS FIRST) WHERE enrolled;
-- Host lists filtered by a fact.
CREATE INDEX hosts_model_idx ON hosts (model);
CREATE INDEX hosts_product_name_idx ON hosts (product_name);
CREATE INDEX hosts_os_version_idx ON hosts (os_version);
