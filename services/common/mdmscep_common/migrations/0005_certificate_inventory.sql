-- Profile-processor: the certificates hosts report (CertificateList) that belong to delivered SCEP
-- profiles, and what verification and renewal need on each delivery.

CREATE TABLE host_certificates (
    host_uuid     text NOT NULL,
    profile_uuid  text NOT NULL,
    sha256        bytea NOT NULL,
    serial        text NOT NULL,
    subject       text NOT NULL,
    issuer        text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_uuid, profile_uuid, sha256)
);
CREATE INDEX host_certificates_not_after_idx ON host_certificates (not_after);

ALTER TABLE host_profiles
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN listed_at timestamptz,
    -- During a renewal: the certificate being replaced, which no longer verifies the delivery.
    ADD COLUMN replacing_sha256 bytea;
