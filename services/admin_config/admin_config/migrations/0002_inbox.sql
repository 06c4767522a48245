-- admin-config's inbox (mdmscep_common/inbox.py): the event ids its consumer has handled, written in
-- the same transaction as its work, so a message delivered twice is handled once. Pruned after
-- 7 days by the consumer's pruning timer. Applied inside the service's schema (admin_config).

CREATE TABLE admin_config_inbox (
    event_id     uuid PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_config_inbox_received_idx ON admin_config_inbox (received_at);
