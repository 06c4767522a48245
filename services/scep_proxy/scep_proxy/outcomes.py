"""`scep.result` events: what a PKIOperation came to, for the processor, which
moves the delivery on (profile_processor/results.py).

Body: {"host_uuid", "profile_uuid", "ca_name", "outcome", "fail_info", "http_status", "detail",
"ca_unreachable", "code_sha256"} where outcome is issued | scep_failure | pending | upstream_error |
timeout, fail_info is the CertRep's failInfo name (badAlg … badCertId) or "", http_status is what
the host was answered, ca_unreachable is true when the CA gave no HTTP answer at all (connection
refused, timed out: the CA is down, which should not use up the host's attempts), and
code_sha256 (hex) names the attempt: the one-time code the host used, as stored.
Published once the code is used up (the processor allowed the PKIOperation), and when an
authorized GetCACaps/GetCACert finds the CA unreachable (the host's attempt ends there); refusals
before that are the processor's own decisions and are not echoed back.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from mdmscep_common import bus
from mdmscep_common.one_time_codes import code_sha256
from mdmscep_common.proxy_urls import ProxyId

from .scep_protocol import MalformedMessage, read_cert_rep
from .upstream import CaAnswer

log = logging.getLogger(__name__)

ISSUED = "issued"
SCEP_FAILURE = "scep_failure"
PENDING = "pending"
UPSTREAM_ERROR = "upstream_error"
TIMEOUT = "timeout"

_BY_PKI_STATUS = {"SUCCESS": ISSUED, "FAILURE": SCEP_FAILURE, "PENDING": PENDING}


class Publisher(Protocol):
    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None: ...


@dataclass(frozen=True)
class ScepOutcome:
    host_uuid: str
    profile_uuid: str
    ca_name: str
    outcome: str
    fail_info: str
    http_status: int
    detail: str
    ca_unreachable: bool = False
    code_sha256: str = ""

    def body(self) -> dict[str, Any]:
        return asdict(self)


def outcome_of_answer(scep_id: ProxyId, answer: CaAnswer) -> ScepOutcome:
    """The outcome of a CA answer the host receives unchanged (2xx or 4xx)."""
    def make(outcome: str, detail: str, fail_info: str = "") -> ScepOutcome:
        return ScepOutcome(scep_id.host_uuid, scep_id.profile_uuid, scep_id.ca_name, outcome,
                           fail_info, answer.status, detail, code_sha256=_code_sha256(scep_id))

    if not 200 <= answer.status <= 299:
        return make(UPSTREAM_ERROR, f"the CA answered HTTP {answer.status}")
    try:
        status = read_cert_rep(answer.body)
    except MalformedMessage as exc:
        return make(UPSTREAM_ERROR, f"the CA answered HTTP {answer.status} but {exc}")
    if status.pki_status == "FAILURE":
        return make(SCEP_FAILURE, "the CA refused the request" if status.fail_info
                    else "the CA refused the request without a known failInfo", status.fail_info)
    if status.pki_status == "PENDING":
        return make(PENDING, "the CA holds the request for manual approval")
    return make(ISSUED, "the CA issued the certificate")


def outcome_of_failure(scep_id: ProxyId, http_status: int, detail: str, timed_out: bool,
                       unreachable: bool = False) -> ScepOutcome:
    return ScepOutcome(scep_id.host_uuid, scep_id.profile_uuid, scep_id.ca_name,
                       TIMEOUT if timed_out else UPSTREAM_ERROR, "", http_status, detail,
                       ca_unreachable=unreachable, code_sha256=_code_sha256(scep_id))


def _code_sha256(scep_id: ProxyId) -> str:
    # As the processor stores it (never the code itself: it must not leave the proxy).
    return code_sha256(scep_id.one_time_code).hex()


class BackgroundPublisher:
    """Publishes from a daemon thread so a slow or absent broker never delays a host's answer.

    Bounded: when the queue is full the event is logged and dropped (the host's own retry and
    the processor's reconcile pass recover). Publish failures are logged, never raised."""

    def __init__(self, inner: Publisher, max_pending: int = 1000):
        self._inner = inner
        self._pending: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="scep-result-publisher", daemon=True)
        self._thread.start()

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        try:
            self._pending.put_nowait((routing_key, body))
        except queue.Full:
            log.error("event queue full; event dropped",
                      extra={"routing_key": routing_key, "ca": body.get("ca_name")})

    def _run(self) -> None:
        while (item := self._pending.get()) is not None:
            routing_key, body = item
            try:
                self._inner.publish(routing_key, body)
            except Exception:  # noqa: BLE001 - a lost event must not kill the publisher
                log.exception("could not publish event",
                              extra={"routing_key": routing_key, "ca": body.get("ca_name"),
                                     "host_uuid": body.get("host_uuid")})

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to `timeout` s), then stop."""
        try:
            self._pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def publish_outcome(publisher: Publisher, outcome: ScepOutcome) -> None:
    try:
        publisher.publish(bus.SCEP_RESULT, outcome.body())
    except Exception:  # noqa: BLE001 - the host's answer never depends on the bus
        log.exception("could not publish scep.result",
                      extra={"ca": outcome.ca_name, "host_uuid": outcome.host_uuid})
