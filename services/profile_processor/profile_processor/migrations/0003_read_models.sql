-- profile-processor's read models (profile_processor/read_models.py): its own copies of what other
-- services own and it works from: admin-config's certificate authorities and configuration
-- profiles (kept from the state config.changed carries) and mdm-endpoint's enrolled hosts (kept
-- from host.enrolled, host.checked_out and host.deleted). The processor reads no other schema.
-- Seeded here once from the owners' tables; from then on only events change them. Applied inside
-- the service's schema (profile_processor).

CREATE TABLE known_certificate_authorities (
    id                       bigint PRIMARY KEY,
    name                     text NOT NULL,
    url                      text NOT NULL,
    -- Sealed by admin-config under SERVER_PRIVATE_KEY, as it stores it.
    challenge_encrypted      bytea NOT NULL,
    ca_certificates_pem      text NOT NULL DEFAULT '',
    max_concurrent_requests  integer NOT NULL,
    max_issuance_per_second  double precision,
    -- admin-config's edit time: part of the revision that re-sends the CA's profiles.
    updated_at               timestamptz NOT NULL
);
CREATE INDEX known_certificate_authorities_name_idx ON known_certificate_authorities (name);

CREATE TABLE known_profiles (
    uuid              text PRIMARY KEY,
    identifier        text NOT NULL,
    name              text NOT NULL,
    raw               bytea NOT NULL,
    checksum          bytea NOT NULL,
    has_scep_payload  boolean NOT NULL
);

-- The CAs a profile's Fleet variables name. No foreign key to known_certificate_authorities:
-- events of different rows may arrive in any order.
CREATE TABLE known_profile_certificate_authorities (
    profile_uuid  text NOT NULL REFERENCES known_profiles (uuid) ON DELETE CASCADE,
    ca_id         bigint NOT NULL,
    PRIMARY KEY (profile_uuid, ca_id)
);
CREATE INDEX known_profile_certificate_authorities_ca_idx
    ON known_profile_certificate_authorities (ca_id);

-- Hosts that are enrolled now (a checked-out or deleted host has no row).
CREATE TABLE enrolled_hosts (
    uuid  text PRIMARY KEY
);

-- The newest event applied to each copied row, deleted rows included: an older event that
-- arrives late (redelivery, replicas of a relay) changes nothing. The event's `sequence` is its
-- position in the owner's outbox (mdmscep_common/outbox.py).
CREATE TABLE read_model_sequences (
    entity      text NOT NULL,
    entity_key  text NOT NULL,
    sequence    bigint NOT NULL,
    PRIMARY KEY (entity, entity_key)
);

INSERT INTO known_certificate_authorities
    SELECT id, name, url, challenge_encrypted, ca_certificates_pem, max_concurrent_requests,
           max_issuance_per_second, updated_at
    FROM admin_config.certificate_authorities;
INSERT INTO known_profiles
    SELECT uuid, identifier, name, raw, checksum, has_scep_payload FROM admin_config.profiles;
INSERT INTO known_profile_certificate_authorities
    SELECT profile_uuid, ca_id FROM admin_config.profile_certificate_authorities;
INSERT INTO enrolled_hosts SELECT uuid FROM mdm_endpoint.hosts WHERE enrolled;
