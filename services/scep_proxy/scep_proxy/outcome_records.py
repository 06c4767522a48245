"""What the proxy records of a SCEP outcome, in one transaction on the host's request path: the
ca_requests row of a request that reached the CA (the admin's per-CA statistics) and the
`scep.result` event in scep-proxy's outbox, which `scep-proxy grpc` relays to RabbitMQ. Both or
neither; the broker is never waited on.

The host's answer does not depend on it: with the database away the outcome is logged and
counted, and the delivery recovers as for any lost attempt (the host's retry, or the processor's
re-send after SCEP_CODE_TTL).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from mdmscep_common import bus
from mdmscep_common.outbox import Events

from .outcomes import ScepOutcome

log = logging.getLogger(__name__)

RECORD_FAILURES = Counter("scep_proxy_outcome_record_failures", "SCEP outcomes that could not "
                          "be recorded (database unavailable): their scep.result is lost")


class OutcomeStore:
    def __init__(self, db, events: Events):
        self._db = db
        self._events = events

    def record(self, outcome: ScepOutcome, latency_ms: float | None) -> None:
        try:
            with self._db.transaction() as conn:
                if latency_ms is not None:
                    conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms) "
                                 "VALUES (%s, %s, %s)",
                                 (outcome.ca_name, outcome.outcome, latency_ms))
                self._events.add(conn, bus.SCEP_RESULT, outcome.body())
        except Exception:  # noqa: BLE001 - the host gets its answer whatever happens here
            RECORD_FAILURES.inc()
            log.exception("could not record a SCEP outcome; its scep.result is lost",
                          extra={"ca": outcome.ca_name, "host_uuid": outcome.host_uuid,
                                 "outcome": outcome.outcome})
