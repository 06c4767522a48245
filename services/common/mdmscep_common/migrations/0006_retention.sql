-- Retention (docs/operations.md "Retention"): mdm-endpoint prunes finished commands in batches.
-- Acknowledged/failed commands are found by commands_completed_at_idx; replaced ones (never
-- sent, so never completed) by this small partial index.
CREATE INDEX IF NOT EXISTS commands_replaced_idx ON commands (created_at) WHERE status = 'replaced';

-- commands turns over its whole content every COMMAND_RETENTION_DAYS: vacuum after 2 % of it
-- changed (default 20 %), so space freed by pruning is reused soon and the table stays flat.
ALTER TABLE commands SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE scep_codes SET (autovacuum_vacuum_scale_factor = 0.05);
