-- Profile-processor's tables: each host's delivery of each profile, and one-time SCEP codes.

CREATE TABLE host_profiles (
    host_uuid        text NOT NULL,
    profile_uuid     text NOT NULL,
    operation_type   text NOT NULL DEFAULT 'install',   -- install | remove
    status           text NOT NULL DEFAULT 'pending',   -- pending | verifying | verified | failed
    detail           text NOT NULL DEFAULT '',
    -- Kept here so a RemoveProfile can be sent after the profile itself is gone.
    identifier       text NOT NULL,
    profile_name     text NOT NULL DEFAULT '',
    -- What was delivered (profile checksum and CA revision); a change means re-send.
    revision         text,
    attempts         integer NOT NULL DEFAULT 0,
    command_uuid     text,
    verify_command_uuid text,
    verify_requested_at timestamptz,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    verified_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_uuid, profile_uuid)
);
CREATE INDEX host_profiles_due_idx ON host_profiles (next_attempt_at) WHERE status = 'pending';
CREATE INDEX host_profiles_command_idx ON host_profiles (command_uuid);
CREATE INDEX host_profiles_profile_idx ON host_profiles (profile_uuid, status);
CREATE INDEX host_profiles_verified_idx ON host_profiles (verified_at) WHERE status = 'verified';

CREATE TABLE scep_codes (
    -- SHA-256 of the one-time code: a copy of the database does not yield usable codes.
    code_sha256   bytea PRIMARY KEY,
    host_uuid     text NOT NULL,
    profile_uuid  text NOT NULL,
    ca_name       text NOT NULL,
    command_uuid  text NOT NULL,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scep_codes_host_profile_idx ON scep_codes (host_uuid, profile_uuid);
CREATE INDEX scep_codes_expires_at_idx ON scep_codes (expires_at);
