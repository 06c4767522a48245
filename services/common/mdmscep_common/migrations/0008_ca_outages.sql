-- profile-processor: an attempt that found the CA down (no HTTP answer) is given back to the host
-- instead of counting against its 3 attempts; the retries it costs are counted (and capped).

ALTER TABLE host_profiles
    -- The command whose attempt found the CA unreachable (the CA's scep.result and the host's
    -- own Error for it are then handled once).
    ADD COLUMN ca_unreachable_command text,
    ADD COLUMN ca_unreachable_retries integer NOT NULL DEFAULT 0;
