-- profile-processor's inbox (mdmscep_common/inbox.py): the event ids its consumer has handled, written in
-- the same transaction as its work, so a message delivered twice is handled once. Pruned after
-- 7 days by the consumer's pruning timer. Applied inside the service's schema (profile_processor).

CREATE TABLE profile_processor_inbox (
    event_id     uuid PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_processor_inbox_received_idx ON profile_processor_inbox (received_at);
