-- Secrets at rest (docs/operations.md "Rotating SERVER_PRIVATE_KEY").

-- mdm-endpoint now stores each command plist sealed (AES-256-GCM, mdm_endpoint.command_payloads):
-- a rendered InstallProfile carries the CA's challenge and a live one-time code. Rows queued
-- before are served as they are until `mdm-endpoint rotate-key` seals them; finished ones are
-- deleted COMMAND_RETENTION_DAYS after they finished. Ciphertext does not compress, so PostgreSQL
-- stops trying: large payloads go out of line as they are.
ALTER TABLE commands ALTER COLUMN payload SET STORAGE EXTERNAL;

-- A host's error can quote the proxy URL it could not reach, one-time code included, and delivery
-- details kept such texts; mdm-endpoint and the processor now mask the code before storing it
-- (mdmscep_common.one_time_codes.redact_codes). The same masking for the details already stored.
UPDATE host_profiles
SET detail = regexp_replace(detail,
                            '(/mdm/scep/proxy/[^\s"''<>?#&]*(,|%2[cC]|%252[cC]))[A-Za-z0-9_-]+',
                            '\1********', 'g')
WHERE detail LIKE '%/mdm/scep/proxy/%';
