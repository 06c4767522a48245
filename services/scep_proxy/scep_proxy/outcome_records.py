"""What the proxy records of a SCEP outcome: the ca_requests row of a request that reached the
CA (the admin's per-CA statistics) and the `scep.result` event in scep-proxy's outbox, which
`scep-proxy grpc` relays to RabbitMQ. Both or neither, in one transaction; the broker is never
waited on.

They are written by a thread of the worker, not on the host's request path: the host has its
answer without waiting for the transaction (four round trips and a commit, about 0.8 ms), and
outcomes that come together share one commit. What is not written yet when the worker stops
gracefully is written then (close); a worker killed with outcomes waiting loses them, as it
would lose those of requests it was still answering.

The host's answer does not depend on it: with the database away the outcome is logged and
counted, and the delivery recovers as for any lost attempt (the host's retry, or the processor's
re-send after SCEP_CODE_TTL).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from mdmscep_common import bus
from mdmscep_common.outbox import Events

from .batch_writer import WRITE_FAILED, BatchWriter
from .outcomes import ScepOutcome
from .store import CaRequestStore

log = logging.getLogger(__name__)

RECORD_FAILURES = Counter("scep_proxy_outcome_record_failures", "SCEP outcomes that could not "
                          "be recorded (database unavailable): their scep.result is lost")

MAX_PENDING = 10_000  # outcomes waiting to be written; past it they are lost, not waited for
PER_TRANSACTION = 200


class OutcomeStore:
    def __init__(self, db, events: Events, max_pending: int = MAX_PENDING):
        self._db = db
        self._events = events
        self._writer: BatchWriter[tuple[ScepOutcome, float | None]] = BatchWriter(
            "scep-outcomes", self._write, self._lost, max_pending, PER_TRANSACTION)

    def record(self, outcome: ScepOutcome, latency_ms: float | None) -> None:
        """Queue the outcome for the writer; never waits."""
        self._writer.add((outcome, latency_ms))

    def flush(self) -> None:
        """Wait until every outcome recorded so far is written (or counted lost)."""
        self._writer.flush()

    def close(self) -> None:
        """Write what waits, then stop the writer."""
        self._writer.close()

    def _write(self, outcomes: list[tuple[ScepOutcome, float | None]]) -> None:
        with self._db.transaction() as conn:
            CaRequestStore.add(conn, [(o.ca_name, o.outcome, latency) for o, latency in outcomes
                                      if latency is not None])
            for outcome, _ in outcomes:
                self._events.add(conn, bus.SCEP_RESULT, outcome.body())

    @staticmethod
    def _lost(outcomes: list[tuple[ScepOutcome, float | None]], reason: str) -> None:
        RECORD_FAILURES.inc(len(outcomes))
        for outcome, _ in outcomes:
            log.error("could not record a SCEP outcome; its scep.result is lost",
                      exc_info=reason == WRITE_FAILED,
                      extra={"ca": outcome.ca_name, "host_uuid": outcome.host_uuid,
                             "outcome": outcome.outcome, "reason": reason})
