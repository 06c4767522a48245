"""Per-CA SCEP outcomes for Prometheus: every `scep.result` the proxy records is also counted
by CA, outcome (issued, scep_failure, pending, upstream_error, timeout) and failInfo. The CA name
is one the processor authorized (outcomes exist only for authorized PKIOperations)."""

from __future__ import annotations

from prometheus_client import Counter

from .outcomes import ISSUED, PENDING, SCEP_FAILURE, TIMEOUT, UPSTREAM_ERROR, OutcomeRecorder, ScepOutcome

OUTCOMES = {ISSUED, SCEP_FAILURE, PENDING, UPSTREAM_ERROR, TIMEOUT}
FAIL_INFOS = {"", "badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId"}

SCEP_OUTCOMES = Counter("scep_proxy_outcomes", "What PKIOperations came to, per CA: outcome and "
                        "the CA's failInfo", ["ca", "outcome", "fail_info"])


class CountingRecorder:
    """Wraps the proxy's outcome recorder: counts each outcome, then passes it on."""

    def __init__(self, inner: OutcomeRecorder):
        self._inner = inner

    def record(self, outcome: ScepOutcome, latency_ms: float | None) -> None:
        SCEP_OUTCOMES.labels(outcome.ca_name[:255],
                             outcome.outcome if outcome.outcome in OUTCOMES else "other",
                             outcome.fail_info if outcome.fail_info in FAIL_INFOS else "other").inc()
        self._inner.record(outcome, latency_ms)
