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
import queue
import threading

from prometheus_client import Counter

from mdmscep_common import bus
from mdmscep_common.outbox import Events

from .outcomes import ScepOutcome

log = logging.getLogger(__name__)

RECORD_FAILURES = Counter("scep_proxy_outcome_record_failures", "SCEP outcomes that could not "
                          "be recorded (database unavailable): their scep.result is lost")

MAX_PENDING = 10_000  # outcomes waiting to be written; past it they are lost, not waited for
PER_TRANSACTION = 200
_STOP = object()


class OutcomeStore:
    def __init__(self, db, events: Events, max_pending: int = MAX_PENDING):
        self._db = db
        self._events = events
        self._pending: queue.Queue = queue.Queue(max_pending)
        self._closed = False
        self._writer = threading.Thread(target=self._write, name="scep-outcomes", daemon=True)
        self._writer.start()

    def record(self, outcome: ScepOutcome, latency_ms: float | None) -> None:
        """Queue the outcome for the writer; never waits (a full queue loses it, counted)."""
        try:
            self._pending.put_nowait((outcome, latency_ms))
        except queue.Full:
            self._lost([(outcome, latency_ms)], "too many outcomes waiting to be written",
                       failed=False)

    def flush(self) -> None:
        """Wait until every outcome recorded so far is written (or counted lost)."""
        self._pending.join()

    def close(self, timeout: float = 10.0) -> None:
        """Write what waits, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._pending.put(_STOP)
        self._writer.join(timeout)

    def _write(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < PER_TRANSACTION:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            outcomes = [item for item in batch if item is not _STOP]
            try:
                if outcomes:
                    self._write_batch(outcomes)
            finally:
                for _ in batch:
                    self._pending.task_done()
            if len(outcomes) < len(batch):
                return

    def _write_batch(self, outcomes: list[tuple[ScepOutcome, float | None]]) -> None:
        try:
            with self._db.transaction() as conn:
                for outcome, latency_ms in outcomes:
                    if latency_ms is not None:
                        conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms) "
                                     "VALUES (%s, %s, %s)",
                                     (outcome.ca_name, outcome.outcome, latency_ms))
                    self._events.add(conn, bus.SCEP_RESULT, outcome.body())
        except Exception:  # noqa: BLE001 - the writer keeps going whatever happens here
            self._lost(outcomes, "database unavailable", failed=True)

    @staticmethod
    def _lost(outcomes: list[tuple[ScepOutcome, float | None]], reason: str,
              failed: bool) -> None:
        """`failed`: called while handling the exception that lost them (logged with it)."""
        RECORD_FAILURES.inc(len(outcomes))
        for outcome, _ in outcomes:
            log.error("could not record a SCEP outcome; its scep.result is lost", exc_info=failed,
                      extra={"ca": outcome.ca_name, "host_uuid": outcome.host_uuid,
                             "outcome": outcome.outcome, "reason": reason})
