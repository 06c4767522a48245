"""Per-CA SCEP outcomes for Prometheus: every `scep.result` the proxy publishes is also counted
by CA, outcome (issued, scep_failure, pending, upstream_error, timeout) and failInfo. The CA name
is one the processor authorized (outcomes exist only for authorized PKIOperations)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from mdmscep_common import bus

from .outcomes import ISSUED, PENDING, SCEP_FAILURE, TIMEOUT, UPSTREAM_ERROR, Publisher

OUTCOMES = {ISSUED, SCEP_FAILURE, PENDING, UPSTREAM_ERROR, TIMEOUT}
FAIL_INFOS = {"", "badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId"}

SCEP_OUTCOMES = Counter("scep_proxy_outcomes", "What PKIOperations came to, per CA: outcome and "
                        "the CA's failInfo", ["ca", "outcome", "fail_info"])


class CountingPublisher:
    """Wraps the proxy's event publisher: counts each scep.result, then passes it on."""

    def __init__(self, inner: Publisher):
        self._inner = inner

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        if routing_key == bus.SCEP_RESULT:
            outcome = body.get("outcome")
            fail_info = body.get("fail_info") or ""
            SCEP_OUTCOMES.labels(str(body.get("ca_name", ""))[:255],
                                 outcome if outcome in OUTCOMES else "other",
                                 fail_info if fail_info in FAIL_INFOS else "other").inc()
        self._inner.publish(routing_key, body, message_id)

    def close(self, *args, **kwargs) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close(*args, **kwargs)
