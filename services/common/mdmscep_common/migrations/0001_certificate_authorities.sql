-- Admin-config's tables: certificate authorities, activities (audit log), API tokens.

CREATE TABLE certificate_authorities (
    id                      bigserial PRIMARY KEY,
    name                    text NOT NULL UNIQUE,
    type                    text NOT NULL DEFAULT 'custom_scep_proxy',
    url                     text NOT NULL,
    -- AES-256-GCM (mdmscep_common.crypto); the clear challenge is never stored.
    challenge_encrypted     bytea NOT NULL,
    -- PEM of the certificates GetCACert returned when the URL was last probed.
    ca_certificates_pem     text NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE activities (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL,
    actor       text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activities_created_at_idx ON activities (created_at DESC, id DESC);

CREATE TABLE api_tokens (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    -- SHA-256 of the token; tokens are 32 random bytes so a fast hash is enough.
    token_sha256  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
