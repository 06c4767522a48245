-- mdm-endpoint's outbox (mdmscep_common/outbox.py): its events are added in the same transaction as
-- the change they announce, and a relay (`mdm-endpoint grpc`) publishes the committed rows to RabbitMQ
-- (publisher confirms, message_id = event_id), then sets published_at; published rows are pruned
-- after a day. Applied inside the service's schema (mdm_endpoint).

CREATE TABLE mdm_endpoint_outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    routing_key   text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
-- What the relay claims, in id order; small, since rows leave it within moments.
CREATE INDEX mdm_endpoint_outbox_unpublished_idx ON mdm_endpoint_outbox (id) WHERE published_at IS NULL;
-- What pruning deletes.
CREATE INDEX mdm_endpoint_outbox_published_idx ON mdm_endpoint_outbox (published_at) WHERE published_at IS NOT NULL;
-- Every row is inserted, updated once and deleted a day later: vacuum early.
ALTER TABLE mdm_endpoint_outbox SET (autovacuum_vacuum_scale_factor = 0.02);
