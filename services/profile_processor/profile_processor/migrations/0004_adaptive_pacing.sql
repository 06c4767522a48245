-- Adaptive issuance pacing (profile_processor/pacing.py): each CA's issuance rate is learned from
-- the CA's answers (scep.result), additive increase while it answers fast, multiplicative
-- decrease on a slow answer or a failure, within the admin's max_issuance_per_second when set.
-- Kept on the CA's ca_pacing row, which every processor replica shares. Applied inside the
-- service's schema (profile_processor).

ALTER TABLE ca_pacing
    -- The learned rate (certificates/s); NULL until the CA's first answer changes it (the start
    -- rate then: max_issuance_per_second, else 5 per allowed concurrent request).
    ADD COLUMN per_second     double precision,
    -- Why it last changed (fast_answers, slow_answer, scep_failure, server_error, timeout,
    -- unreachable), and when.
    ADD COLUMN reason         text NOT NULL DEFAULT 'start',
    ADD COLUMN changed_at     timestamptz,
    -- The last decrease: at most one per short window, so one burst of bad answers (about
    -- deliveries sent before it) does not take the rate down to the floor.
    ADD COLUMN decreased_at   timestamptz,
    -- The CA's normal answer time and its recent one (ms, moving averages over about the last
    -- 50 and the last 5 answers): recent answers well above the normal are slow.
    ADD COLUMN baseline_ms    double precision,
    ADD COLUMN recent_ms      double precision,
    -- The CA's answers per second, counted over windows of a few seconds (answers since
    -- answers_since; answers_per_second: the last whole window's): the rate grows only while
    -- the CA's traffic keeps up with it.
    ADD COLUMN answers_since       timestamptz,
    ADD COLUMN answers             integer NOT NULL DEFAULT 0,
    ADD COLUMN answers_per_second  double precision,
    -- Deliveries beyond the reserved horizon wait in the CA's queue (host_profiles.queued_for_ca):
    -- where the next one to join it is expected to get its turn. NULL: the queue is empty.
    ADD COLUMN queue_until    timestamptz;

-- A delivery waiting in a CA's queue for its issuance turn, without a slot yet: it is taken from
-- the queue at the rate of the moment (its next_attempt_at is an estimate, its place in line).
ALTER TABLE host_profiles ADD COLUMN queued_for_ca bigint;
CREATE INDEX host_profiles_queued_idx ON host_profiles (queued_for_ca, next_attempt_at)
    WHERE queued_for_ca IS NOT NULL;
