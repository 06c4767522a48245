-- Admin-config's configuration profiles and which CAs each one uses.

CREATE TABLE profiles (
    uuid           text PRIMARY KEY,
    name           text NOT NULL,
    -- PayloadIdentifier: unique among profiles; RemoveProfile uses it.
    identifier     text NOT NULL UNIQUE,
    payload_uuid   text NOT NULL,
    -- The uploaded bytes, delivered byte for byte apart from Fleet variables.
    raw            bytea NOT NULL,
    checksum       bytea NOT NULL,
    has_scep_payload boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE profile_certificate_authorities (
    profile_uuid  text NOT NULL REFERENCES profiles (uuid) ON DELETE CASCADE,
    ca_id         bigint NOT NULL REFERENCES certificate_authorities (id) ON DELETE RESTRICT,
    PRIMARY KEY (profile_uuid, ca_id)
);
CREATE INDEX profile_certificate_authorities_ca_idx ON profile_certificate_authorities (ca_id);
