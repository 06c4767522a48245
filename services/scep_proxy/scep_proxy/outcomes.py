"""`scep.result` events: what a PKIOperation came to, for the processor, which
moves the delivery on (profile_processor/results.py).

Body: {"host_uuid", "profile_uuid", "ca_name", "outcome", "fail_info", "http_status", "detail",
"ca_unreachable", "code_sha256", "latency_ms", "slot_wait_ms"} where outcome is issued |
scep_failure | pending | upstream_error | timeout, fail_info is the CertRep's failInfo name (badAlg …
badCertId) or "", http_status is what the host was answered, ca_unreachable is true when the CA
gave no HTTP answer at all (connection refused, timed out: the CA is down, which should not use up
the host's attempts), code_sha256 (hex) names the attempt: the one-time code the host used, as
stored, latency_ms is the request's time at the CA (as its ca_requests row; null when it never
reached the CA) and slot_wait_ms how long it waited for one of the CA's slots before that. The
processor learns the CA's issuance rate from them (profile_processor/pacing.py).
Recorded once the code is used up (the processor allowed the PKIOperation), and when an
authorized GetCACaps/GetCACert finds the CA unreachable (the host's attempt ends there); refusals
before that are the processor's own decisions and are not echoed back. Recording adds the event
to scep-proxy's outbox (outcome_records.py), which `scep-proxy grpc` relays to RabbitMQ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from mdmscep_common.one_time_codes import code_sha256
from mdmscep_common.proxy_urls import ProxyId

from .scep_protocol import MalformedMessage, read_cert_rep
from .upstream import CaAnswer

ISSUED = "issued"
SCEP_FAILURE = "scep_failure"
PENDING = "pending"
UPSTREAM_ERROR = "upstream_error"
TIMEOUT = "timeout"

_BY_PKI_STATUS = {"SUCCESS": ISSUED, "FAILURE": SCEP_FAILURE, "PENDING": PENDING}


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
    latency_ms: float | None = None
    slot_wait_ms: float = 0.0

    def body(self) -> dict[str, Any]:
        return asdict(self)


class OutcomeRecorder(Protocol):
    def record(self, outcome: ScepOutcome, latency_ms: float | None) -> None:
        """Record the outcome (the scep.result event) and, when the request reached the CA
        (`latency_ms` is then its time there), its ca_requests row. Never raises: the host's
        answer does not depend on it."""


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
