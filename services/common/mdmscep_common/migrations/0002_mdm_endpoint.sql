-- mdm-endpoint's tables: enrolled hosts and their command queues.

CREATE TABLE hosts (
    -- The UDID exactly as the host sent it in Authenticate.
    uuid                  text PRIMARY KEY,
    serial_number         text NOT NULL DEFAULT '',
    device_name           text NOT NULL DEFAULT '',
    model                 text NOT NULL DEFAULT '',
    os_version            text NOT NULL DEFAULT '',
    -- SHA-256 of the device identity certificate bound at Authenticate (one host per certificate).
    identity_cert_sha256  bytea UNIQUE,
    topic                 text,
    push_token            bytea,
    push_magic            text,
    push_token_invalid_at timestamptz,
    enrolled              boolean NOT NULL DEFAULT false,
    enrolled_at           timestamptz,
    last_seen_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hosts_serial_number_idx ON hosts (serial_number);

CREATE TABLE commands (
    command_uuid   text PRIMARY KEY,
    host_uuid      text NOT NULL REFERENCES hosts (uuid) ON DELETE CASCADE,
    request_type   text NOT NULL,
    -- The full command plist as sent to the host.
    payload        bytea NOT NULL,
    -- queued → (delivered) → acknowledged | error | command_format_error; not_now goes back to
    -- queued at the host's next Idle; replaced when a newer command superseded it unsent.
    status         text NOT NULL DEFAULT 'queued',
    result         bytea,
    seq            bigserial,
    delivered_at   timestamptz,
    completed_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_queue_idx ON commands (host_uuid, seq) WHERE status IN ('queued', 'not_now');
CREATE INDEX commands_completed_at_idx ON commands (completed_at) WHERE completed_at IS NOT NULL;
