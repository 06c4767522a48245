-- profile-processor's outbox (mdmscep_common/outbox.py): its events are added in the same transaction
-- as the change they announce, and a relay (a thread of `profile-processor`) publishes the committed
-- rows to RabbitMQ (publisher confirms, message_id = event_id), then sets published_at; published
-- rows are pruned after a day. Applied inside the service's schema (profile_processor).

CREATE TABLE profile_processor_outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    routing_key   text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
-- What the relay claims, in id order; small, since rows leave it within moments.
CREATE INDEX profile_processor_outbox_unpublished_idx ON profile_processor_outbox (id) WHERE published_at IS NULL;
-- What pruning deletes.
CREATE INDEX profile_processor_outbox_published_idx ON profile_processor_outbox (published_at) WHERE published_at IS NOT NULL;
-- Every row is inserted, updated once and deleted a day later: vacuum early.
ALTER TABLE profile_processor_outbox SET (autovacuum_vacuum_scale_factor = 0.02);
