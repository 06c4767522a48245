"""The SCEP proxy as a chain of small steps (micromdm/scep style):

    parse id → check operation → client address not over its refusals? → [PKIOperation: check
    message] → authorize → [PKIOperation: take a CA slot, or give the code back and 503]
    → [GetCACaps/GetCACert: cached answer?] → forward → map the CA's answer

Authorization comes before the CA slot: a forged or replayed URL is refused by the processor
without ever waiting for, holding or being counted against the CA's slots, so it cannot starve
the hosts that have a real code. Refusals are counted per client address (client_limits.py).

Nothing here knows HTTP requests or Flask: views hand in a ScepRequest and get an Answer back or
a ProxyError (errors.py) carrying the status. The answers hosts get: README.md "SCEP proxy".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from mdmscep_common.proxy_urls import MalformedId, ProxyId, ca_name_hint, decode_id

from . import scep_protocol as scep
from .cache import TtlCache
from .client_limits import ClientRefusalLimiter
from .errors import (
    BadGateway,
    BadRequest,
    Busy,
    GatewayTimeout,
    NotAllowed,
    PayloadTooLarge,
    ProxyError,
    Refused,
)
from .limits import CaLimiter, FleetCaLimiter
from .metrics import ProxyMetrics
from .outcomes import TIMEOUT, OutcomeRecorder, ScepOutcome, outcome_of_answer, outcome_of_failure
from .profile_authority_client import Authority, Authorization
from .upstream import CaAnswer, Upstream, UpstreamFailure, UpstreamTimeout

log = logging.getLogger(__name__)

TEXT_PLAIN = "text/plain; charset=utf-8"
# GetCACert's message names the CA for multi-CA servers; longer ones are answered, not cached.
MAX_CACHED_MESSAGE_CHARS = 255

AnswerKey = tuple[str, str, str, str | None]  # CA name, upstream url, operation, message


@dataclass(frozen=True)
class ScepRequest:
    """A host's SCEP request, as the HTTP layer saw it."""

    raw_id: str = field(repr=False)  # path-decoded; carries the one-time code
    operation: str | None
    method: str  # GET, HEAD or POST
    message: str | None = field(default=None, repr=False)  # the `message` query parameter
    body: bytes | None = field(default=None, repr=False)  # POST body, read up to the limit + 1
    body_length: int | None = None  # declared or read length of the POST body
    client: str = ""  # the client's address (mdmscep_common.client_address), for refusal limits


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    ca_label: str = ""  # the CA name once authorized (safe as a metric label), else ""
    retry_after: int | None = None

    @classmethod
    def from_ca(cls, answer: CaAnswer, ca_name: str) -> Answer:
        return cls(answer.status, answer.content_type, answer.body, ca_name)

    @classmethod
    def from_error(cls, error: ProxyError) -> Answer:
        return cls(error.status, TEXT_PLAIN, error.text().encode("utf-8"),
                   error.ca_name if error.verified_ca and error.ca_name else "", error.retry_after)


def check_operation(operation: str | None, method: str, ca_name: str) -> str:
    if not operation:
        raise BadRequest("the operation parameter is missing", ca_name)
    if operation not in scep.OPERATIONS:
        raise BadRequest("unknown SCEP operation; expected GetCACaps, GetCACert or PKIOperation",
                         ca_name)
    if method == "POST" and operation != scep.PKI_OPERATION:
        raise NotAllowed(f"{operation} takes GET", ca_name)
    if method not in ("GET", "POST") and operation == scep.PKI_OPERATION:
        # HEAD would use the code up without the host seeing the answer.
        raise NotAllowed("PKIOperation takes GET or POST", ca_name)
    return operation


def pki_message(request: ScepRequest, ca_name: str) -> bytes:
    """The PKIOperation message (POST body or GET `message`), checked to be a SCEP request.

    Runs before authorization, so garbage never uses the one-time code up."""
    try:
        if request.method == "POST":
            if (request.body_length or 0) > scep.MAX_MESSAGE_BYTES:
                raise scep.MessageTooLarge("the PKIOperation message is over 2 MiB")
            message = request.body or b""
        else:
            if request.message is None:
                raise BadRequest("PKIOperation by GET needs a message parameter", ca_name)
            message = scep.decode_get_message(request.message)
        scep.scep_request_type(message)
    except scep.MessageTooLarge as exc:
        raise PayloadTooLarge(str(exc), ca_name) from None
    except scep.MalformedMessage as exc:
        raise BadRequest(f"not a SCEP message: {exc}", ca_name) from None
    return message


def map_ca_answer(answer: CaAnswer, ca_name: str) -> Answer:
    """The CA's 2xx and 4xx reach the host unchanged; anything else is the CA's failure (502)."""
    if 200 <= answer.status <= 299 or 400 <= answer.status <= 499:
        return Answer.from_ca(answer, ca_name)
    raise UpstreamFailure(f"the CA answered HTTP {answer.status}", "http_status")


def map_failure(failure: UpstreamFailure, ca_name: str) -> BadGateway:
    # No connection at all: the request never reached the CA (down, or its address unreachable).
    # A timeout after sending is not that: the CA may be working on it, or have issued.
    unreachable = failure.kind == "unreachable"
    if isinstance(failure, UpstreamTimeout):
        return GatewayTimeout(failure.detail, ca_name, verified_ca=True, unreachable=unreachable)
    return BadGateway(failure.detail, ca_name, verified_ca=True, unreachable=unreachable)


class ScepProxy:
    def __init__(self, authority: Authority, upstream: Upstream, answers: TtlCache[AnswerKey, Answer],
                 limiter: CaLimiter | FleetCaLimiter, outcomes: OutcomeRecorder, metrics: ProxyMetrics,
                 client_limiter: ClientRefusalLimiter | None = None,
                 trusted_proxies: tuple = ()):
        self._authority = authority
        # Refused requests per client address (forged, guessed or replayed codes): 429 once
        # used up. Load balancers in trusted_proxies may name the client in X-Forwarded-For.
        self._client_limiter = client_limiter or ClientRefusalLimiter()
        self.trusted_proxies = trusted_proxies
        self._upstream = upstream
        self._answers = answers
        self._limiter = limiter
        self._outcomes = outcomes  # scep.result and the CA's ca_requests row (outcome_records.py)
        self.metrics = metrics

    def handle(self, request: ScepRequest) -> Answer:
        try:
            scep_id = decode_id(request.raw_id)
        except MalformedId as exc:
            raise BadRequest(str(exc), ca_name_hint(request.raw_id)) from None
        operation = check_operation(request.operation, request.method, scep_id.ca_name)
        self._client_limiter.check(request.client, scep_id.ca_name)
        try:
            if operation == scep.PKI_OPERATION:
                return self._pki_operation(scep_id, request)
            return self._ca_information(scep_id, operation, request.message)
        except Refused:
            self._client_limiter.refused(request.client)
            raise

    def forget_ca(self, ca_name: str | None) -> None:
        """Drop cached answers (of one CA, or all): its configuration changed."""
        if ca_name is None:
            self._answers.clear()
        else:
            self._answers.drop(lambda key: key[0] == ca_name)
        forget = getattr(self._authority, "forget", None)
        if forget is not None:
            forget(ca_name)

    def _ca_information(self, scep_id: ProxyId, operation: str, message: str | None) -> Answer:
        """GetCACaps / GetCACert: authorized (cached briefly), answered from the per-CA cache."""
        if message is not None and len(message) > scep.MAX_GET_MESSAGE_CHARS:
            raise PayloadTooLarge("the message parameter is over 2 MiB", scep_id.ca_name)
        authorization = self._authority.authorize(scep_id, operation)
        key: AnswerKey = (authorization.ca_name, authorization.upstream_url, operation, message)
        cacheable = message is None or len(message) <= MAX_CACHED_MESSAGE_CHARS
        cached = self._answers.get(key) if cacheable else None
        self.metrics.cache_lookup(operation, hit=cached is not None)
        if cached is not None:
            return cached
        params = {} if message is None else {"message": message}
        url = scep.operation_url(authorization.upstream_url, operation, **params)
        try:
            answer = self._forward(authorization, operation, lambda: self._upstream.get(url))
        except BadGateway as failure:
            if failure.unreachable:
                # The host's SCEP request ends here, before its PKIOperation: tell the processor
                # the CA is down, so this attempt is given back like one that met the outage later.
                self._report(outcome_of_failure(scep_id, failure.status, failure.reason,
                                                timed_out=False, unreachable=True), None,
                             operation)
            raise
        if answer.status == 200 and cacheable:
            self._answers.put(key, answer)
        return answer

    def _pki_operation(self, scep_id: ProxyId, request: ScepRequest) -> Answer:
        message = pki_message(request, scep_id.ca_name)
        # Authorized (the code used up) before a slot is taken: only requests with a real code
        # wait for, hold or are counted against the CA's slots.
        authorization = self._authority.authorize(scep_id, scep.PKI_OPERATION)
        waiting = time.monotonic()
        try:
            # The CA's limit as of this authorization: an admin's change applies right away.
            slot = self._limiter.slot(authorization.ca_name, authorization.max_concurrent_requests)
            slot.__enter__()  # noqa: PLC2801 - released in the finally below
        except Busy:
            # The request never reached the CA: the host keeps its code for the retry it is told
            # to make (503 + Retry-After).
            self._authority.give_back(scep_id)
            self._limiter.record(authorization.ca_name, "busy", 0.0)
            raise
        started = time.monotonic()
        failure: ProxyError | None = None
        try:
            answer = self._forward(authorization, scep.PKI_OPERATION,
                                   lambda: self._send_pki(authorization, request.method, message))
        except ProxyError as exc:
            failure = exc
        finally:
            slot.__exit__(None, None, None)
        latency_ms = (time.monotonic() - started) * 1000
        if failure is not None:
            outcome = outcome_of_failure(scep_id, failure.status, failure.reason,
                                         timed_out=isinstance(failure, GatewayTimeout),
                                         unreachable=getattr(failure, "unreachable", False))
        else:
            outcome = outcome_of_answer(scep_id, CaAnswer(answer.status, answer.content_type,
                                                          answer.body))
        # Both times go to the processor, which paces deliveries to what the CA takes: a slow CA
        # shows in its own time, a CA overdriven up to its slot limit in the wait for a slot.
        # No answer (timeout, unreachable): no time of the CA's.
        answered = outcome.outcome != TIMEOUT and not outcome.ca_unreachable
        self._report(replace(outcome, latency_ms=round(latency_ms, 1) if answered else None,
                             slot_wait_ms=round((started - waiting) * 1000, 1)), latency_ms)
        if failure is not None:
            raise failure
        return answer

    def _send_pki(self, authorization: Authorization, method: str, message: bytes) -> CaAnswer:
        if method == "POST":
            url = scep.operation_url(authorization.upstream_url, scep.PKI_OPERATION)
            return self._upstream.post_pki_message(url, message)
        # A host that uses GET does so because the CA lacks POSTPKIOperation: keep to GET.
        url = scep.operation_url(authorization.upstream_url, scep.PKI_OPERATION,
                                 message=scep.encode_get_message(message))
        return self._upstream.get(url)

    def _forward(self, authorization: Authorization, operation: str, send) -> Answer:
        ca_name = authorization.ca_name
        try:
            return map_ca_answer(send(), ca_name)
        except UpstreamFailure as failure:
            self.metrics.upstream_error(ca_name, operation, failure.kind)
            log.warning("CA gave no usable answer",
                        extra={"ca": ca_name, "operation": operation, "error": failure.detail})
            raise map_failure(failure, ca_name) from None

    def _report(self, outcome: ScepOutcome, latency_ms: float | None,
                operation: str = scep.PKI_OPERATION) -> None:
        """`latency_ms`: the request's time at the CA; None when it never reached it."""
        log.info(f"{operation} done",
                 extra={"ca": outcome.ca_name, "host_uuid": outcome.host_uuid,
                        "outcome": outcome.outcome, "fail_info": outcome.fail_info,
                        "http_status": outcome.http_status})
        self._outcomes.record(outcome, latency_ms)
