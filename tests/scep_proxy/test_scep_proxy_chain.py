"""The scep-proxy chain with in-memory parts (no network): order of the steps, answer mapping,
caches, the per-CA limit and what is published. The real thing is in
test_scep_proxy.py."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mdmscep_common.health import HealthChecks
from scep_proxy.app import create_app
from scep_proxy.cache import TtlCache
from scep_proxy.config_events import ca_to_forget
from scep_proxy.errors import Busy, Refused
from scep_proxy.limits import CaLimiter
from scep_proxy.metrics import ProxyMetrics
from scep_proxy.profile_authority_client import Authorization, CachingAuthority, _reason_for_host
from scep_proxy.proxy import ScepProxy
from scep_proxy.scep_protocol import (
    MAX_MESSAGE_BYTES,
    OID_FAIL_INFO,
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    encode_get_message,
)
from scep_proxy.upstream import CaAnswer, UpstreamFailure, UpstreamTimeout
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.recording_publisher import RecordingPublisher

HOST, PROFILE, CA, CODE = "HOST-1", "profile-1", "Test_SCEP", "S3cretC0de"
CA_URL = "http://ca.example/scep?tenant=a"
PKCS_REQ = scep_message([(OID_MESSAGE_TYPE, "19")])
CERT_REP_OK = scep_message([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "0")])
CERT_REP_FAIL = scep_message([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"),
                              (OID_FAIL_INFO, "2")])
CERT_REP_PENDING = scep_message([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "3")])


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class TableAuthority:
    """Allows everything for CA, except what `refuse` says; records calls."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self.refuse: Refused | None = None
        self.limit: int | None = None  # the CA's max_concurrent_requests; None: not sent

    def authorize(self, scep_id, operation):
        self.calls.append((scep_id.one_time_code, operation))
        if self.refuse:
            raise self.refuse
        return Authorization(scep_id.ca_name, CA_URL, 1, self.limit)

    def give_back(self, scep_id):
        self.calls.append((scep_id.one_time_code, "GiveBack"))
        return True


class ScriptedCa:
    """An Upstream whose answers the test sets; records the URLs and bodies it was sent."""

    def __init__(self):
        self.answer: CaAnswer | Exception = CaAnswer(200, "application/x-pki-message", CERT_REP_OK)
        self.sent: list[tuple[str, str, bytes | None]] = []
        self.hold: threading.Event | None = None

    def _reply(self, method, url, body):
        self.sent.append((method, url, body))
        if self.hold is not None:
            self.hold.wait(5)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def get(self, url):
        return self._reply("GET", url, None)

    def post_pki_message(self, url, message):
        return self._reply("POST", url, message)


class World:
    def __init__(self, slots=2, queue_timeout=0.1, publisher=None):
        self.authority = TableAuthority()
        self.ca = ScriptedCa()
        self.publisher = publisher or RecordingPublisher()
        self.proxy = ScepProxy(CachingAuthority(self.authority), self.ca, TtlCache(60),
                               CaLimiter(slots, queue_timeout), self.publisher, ProxyMetrics())
        self.app = create_app(self.proxy, HealthChecks({}))
        self.client = self.app.test_client()

    @staticmethod
    def path(code=CODE, ca=CA, host=HOST, profile=PROFILE):
        return "/mdm/scep/proxy/" + quote(f"{host},{profile},{ca},{code}", safe="")

    def get(self, operation, code=CODE, **params):
        return self.client.get(self.path(code), query_string={"operation": operation, **params})

    def post(self, body, code=CODE, content_type="application/octet-stream"):
        return self.client.post(self.path(code), query_string={"operation": "PKIOperation"},
                                data=body, content_type=content_type)


@pytest.fixture
def world():
    return World()


# --- GetCACaps / GetCACert ------------------------------------------------------------------

def test_ca_information_is_forwarded_and_cached(world):
    world.ca.answer = CaAnswer(200, "application/x-x509-ca-cert", b"DER")
    for _ in range(3):
        response = world.get("GetCACert", message="ca-ident")
        assert response.status_code == 200 and response.data == b"DER"
        assert response.headers["Content-Type"] == "application/x-x509-ca-cert"
    assert len(world.ca.sent) == 1
    method, url, _ = world.ca.sent[0]
    assert method == "GET"
    assert parse_qs(urlsplit(url).query) == {"tenant": ["a"], "operation": ["GetCACert"],
                                             "message": ["ca-ident"]}
    assert world.authority.calls == [(CODE, "GetCACert")]  # authorization cached too
    world.get("GetCACert", message="other-ident")
    assert len(world.ca.sent) == 2  # the message is part of the cache key


def test_config_change_drops_the_cached_answers(world):
    world.ca.answer = CaAnswer(200, "text/plain", b"POSTPKIOperation\n")
    world.get("GetCACaps")
    world.proxy.forget_ca("Other_CA")
    world.get("GetCACaps")
    assert len(world.ca.sent) == 1
    world.proxy.forget_ca(CA)
    world.get("GetCACaps")
    assert len(world.ca.sent) == 2
    world.proxy.forget_ca(None)
    world.get("GetCACaps")
    assert len(world.ca.sent) == 3
    assert len(world.authority.calls) == 3  # forgotten authorizations are asked again


def test_only_successes_are_cached(world):
    world.ca.answer = CaAnswer(404, "text/plain", b"no such CA")
    assert world.get("GetCACert").status_code == 404
    assert world.get("GetCACert").status_code == 404
    assert len(world.ca.sent) == 2


def test_ca_answer_without_content_type_stays_without(world):
    world.ca.answer = CaAnswer(200, "", b"caps")
    response = world.get("GetCACaps")
    assert response.data == b"caps" and "Content-Type" not in response.headers


# --- PKIOperation ---------------------------------------------------------------------------

def test_post_is_forwarded_raw_and_published(world):
    response = world.post(PKCS_REQ, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and response.data == CERT_REP_OK
    assert response.headers["Content-Type"] == "application/x-pki-message"
    method, url, body = world.ca.sent[0]
    assert (method, body) == ("POST", PKCS_REQ)
    assert parse_qs(urlsplit(url).query)["operation"] == ["PKIOperation"]
    [(key, published)] = world.publisher.messages
    # The CA's time and the wait for one of its slots (for the processor's pacing).
    assert published.pop("latency_ms") >= 0 and published.pop("slot_wait_ms") >= 0
    assert (key, published) == ("scep.result", {
        "host_uuid": HOST, "profile_uuid": PROFILE, "ca_name": CA, "outcome": "issued",
        "fail_info": "", "http_status": 200, "detail": "the CA issued the certificate",
        "ca_unreachable": False, "code_sha256": hashlib.sha256(CODE.encode()).hexdigest()})


def test_get_is_forwarded_as_get(world):
    message = encode_get_message(PKCS_REQ)
    response = world.client.get(world.path() + "?operation=PKIOperation&message="
                                + quote(message, safe=""))
    assert response.status_code == 200
    method, url, _ = world.ca.sent[0]
    assert method == "GET"
    assert parse_qs(urlsplit(url).query)["message"] == [message]


@pytest.mark.parametrize("answer, outcome, fail_info", [
    (CaAnswer(200, "application/x-pki-message", CERT_REP_FAIL), "scep_failure", "badRequest"),
    (CaAnswer(200, "application/x-pki-message", CERT_REP_PENDING), "pending", ""),
    (CaAnswer(200, "application/x-pki-message", b"not a certrep"), "upstream_error", ""),
    (CaAnswer(403, "text/html", b"<h1>no</h1>"), "upstream_error", ""),
])
def test_ca_answers_pass_through_with_their_outcome(world, answer, outcome, fail_info):
    world.ca.answer = answer
    response = world.post(PKCS_REQ)
    assert (response.status_code, response.data) == (answer.status, answer.body)
    assert response.headers["Content-Type"] == answer.content_type
    body = world.publisher.messages[0][1]
    assert (body["outcome"], body["fail_info"], body["http_status"]) == \
        (outcome, fail_info, answer.status)


# `ca_unreachable`: no connection, the request never reached the CA (down), which the processor
# does not count as an attempt; a timeout after sending is an attempt like a 5xx.
@pytest.mark.parametrize("answer, status, outcome, unreachable", [
    (CaAnswer(500, "text/plain", b"boom"), 502, "upstream_error", False),
    (CaAnswer(503, "text/plain", b"later"), 502, "upstream_error", False),
    (CaAnswer(302, "text/plain", b""), 502, "upstream_error", False),
    (UpstreamFailure("the CA's answer could not be read"), 502, "upstream_error", False),
    (UpstreamFailure("the CA is unreachable", "unreachable"), 502, "upstream_error", True),
    (UpstreamFailure("the CA's URL cannot be used", "misconfigured"), 502, "upstream_error", False),
    (UpstreamTimeout("the CA did not answer within 2 s"), 504, "timeout", False),
])
def test_ca_failures(world, answer, status, outcome, unreachable):
    world.ca.answer = answer
    response = world.post(PKCS_REQ)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert f"CA {CA}" in response.get_data(as_text=True)
    body = world.publisher.messages[0][1]
    assert (body["outcome"], body["http_status"], body["ca_unreachable"]) == \
        (outcome, status, unreachable)
    # The CA's time only when it answered (a 5xx, an unreadable answer), none without an answer.
    answered = outcome != "timeout" and not unreachable
    assert (body["latency_ms"] is not None) == answered and body["slot_wait_ms"] >= 0
    # The attempt is named by the stored hash of its code, never by the code.
    assert body["code_sha256"] == hashlib.sha256(CODE.encode()).hexdigest()
    assert CODE not in json.dumps(body)
    assert world.proxy.metrics.upstream_errors.collect()[0].samples[0].labels["ca"] == CA


@pytest.mark.parametrize("body", [b"", b"garbage", PKCS_REQ[:100],
                                  scep_message([(OID_MESSAGE_TYPE, "3")])])
def test_garbage_is_refused_before_authorization(world, body):
    response = world.post(body)
    assert response.status_code == 400
    assert world.authority.calls == [] and world.ca.sent == [] and world.publisher.messages == []


@pytest.mark.parametrize("query", ["operation=PKIOperation", "operation=PKIOperation&message=%25%25",
                                   "operation=PKIOperation&message=aGVsbG8%3D"])
def test_garbage_get_is_refused_before_authorization(world, query):
    assert world.client.get(world.path() + "?" + query).status_code == 400
    assert world.authority.calls == []


def test_oversized_body_is_413(world):
    response = world.post(b"\x30" * (MAX_MESSAGE_BYTES + 1))
    assert response.status_code == 413 and f"CA {CA}" in response.get_data(as_text=True)
    assert world.authority.calls == []


def test_refusal_carries_the_processors_status(world):
    world.authority.refuse = Refused("one-time code already used", CA, status=403)
    response = world.post(PKCS_REQ)
    assert response.status_code == 403
    assert response.get_data(as_text=True) == \
        f"SCEP proxy, CA {CA}: one-time code already used\n"
    assert world.ca.sent == [] and world.publisher.messages == []


def test_full_ca_refuses_with_retry_after_and_gives_the_code_back():
    world = World(slots=1, queue_timeout=0.1)
    world.ca.hold = threading.Event()
    first = threading.Thread(target=world.post, args=(PKCS_REQ, "first"))
    first.start()
    try:
        for _ in range(100):
            if world.ca.sent:
                break
            threading.Event().wait(0.01)
        response = world.post(PKCS_REQ, code="second")
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        # Authorized first (forged URLs never wait for a slot), then the code given back.
        assert world.authority.calls == [("first", "PKIOperation"), ("second", "PKIOperation"),
                                         ("second", "GiveBack")]
    finally:
        world.ca.hold.set()
        first.join(5)
    # The slot is free again.
    assert world.post(PKCS_REQ, code="third").status_code == 200


def test_the_cas_limit_is_the_one_its_authorization_carries():
    world = World(slots=1, queue_timeout=0.1)  # the proxy's default: 1
    world.authority.limit = 2  # the CA's own max_concurrent_requests
    world.ca.hold = threading.Event()
    holders = [threading.Thread(target=world.post, args=(PKCS_REQ, f"held-{n}")) for n in (1, 2)]
    try:
        for holder in holders:
            holder.start()
        for _ in range(200):
            if len(world.ca.sent) == 2:
                break
            threading.Event().wait(0.01)
        assert len(world.ca.sent) == 2  # both at the CA at once, over the default
        assert world.post(PKCS_REQ, code="third").status_code == 503
    finally:
        world.ca.hold.set()
        for holder in holders:
            holder.join(5)
    world.ca.hold = None
    assert world.post(PKCS_REQ, code="fourth").status_code == 200


def test_an_outcome_that_cannot_be_recorded_does_not_change_the_answer():
    from scep_proxy.outcome_records import RECORD_FAILURES, OutcomeStore

    class DatabaseAway:
        def transaction(self):
            raise psycopg.OperationalError("connection refused")

    events = RecordingPublisher()
    store = OutcomeStore(DatabaseAway(), events)
    world = World(publisher=store)
    failures = RECORD_FAILURES._value.get()
    try:
        assert world.post(PKCS_REQ).status_code == 200
        store.flush()
        assert RECORD_FAILURES._value.get() == failures + 1 and events.messages == []
    finally:
        store.close()


# --- request shape --------------------------------------------------------------------------

@pytest.mark.parametrize("method, query, status", [
    ("GET", "", 400),
    ("GET", "operation=GetCaCaps", 400),
    ("GET", "operation=Nope", 400),
    ("POST", "operation=GetCACaps", 405),
    ("HEAD", "operation=PKIOperation&message=x", 405),
    ("PUT", "operation=PKIOperation", 405),
])
def test_bad_operations(world, method, query, status):
    response = world.client.open(world.path() + "?" + query, method=method)
    assert response.status_code == status
    assert world.authority.calls == []


@pytest.mark.parametrize("path", ["/mdm/scep/proxy/", "/mdm/scep/proxy/a,b",
                                  "/mdm/scep/proxy/a/b/c/d", "/mdm/scep/proxy/a%2Fb,c,Test_SCEP,d",
                                  "/mdm/scep/proxy/" + "x" * 5000])
def test_malformed_ids_are_400_without_authorization(world, path):
    response = world.client.get(path + "?operation=GetCACaps")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert world.authority.calls == []


def test_metrics_never_carry_codes_hosts_or_unverified_names(world):
    world.get("GetCACaps")
    world.client.get(world.path(ca="Invented_CA") + "?operation=PKIOperation")
    world.authority.refuse = Refused("unknown certificate authority", "Made_Up", status=404)
    world.get("GetCACert", code="another")
    text = world.client.get("/metrics").get_data(as_text=True)
    assert 'scep_proxy_requests_total{operation="GetCACaps",status="200"} 1.0' in text
    assert 'scep_proxy_requests_total{operation="GetCACert",status="404"} 1.0' in text
    for secret in (CODE, "another", HOST, PROFILE, "Invented_CA", "Made_Up"):
        assert secret not in text


# --- the parts ------------------------------------------------------------------------------

def test_ttl_cache_expires_and_is_bounded():
    clock = Clock()
    cache = TtlCache(10, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    clock.now += 10
    assert cache.get("b") is None
    disabled = TtlCache(0)
    disabled.put("a", 1)
    assert disabled.get("a") is None


def test_limiter_counts_only_what_is_in_flight():
    limiter = CaLimiter(1, 0)
    with limiter.slot("A", None):
        with pytest.raises(Busy):
            with limiter.slot("A", None):
                pass
        with limiter.slot("B", None):
            assert limiter.in_flight("A") == limiter.in_flight("B") == 1
    assert limiter._in_flight == {}


def test_limiter_takes_the_cas_own_limit_over_the_default():
    limiter = CaLimiter(1, 0)
    with limiter.slot("A", 2), limiter.slot("A", 2):
        with pytest.raises(Busy) as busy:
            with limiter.slot("A", 2):
                pass
        assert "2 requests" in str(busy.value)
        with pytest.raises(Busy):  # lowered meanwhile: no new slot until enough are given back
            with limiter.slot("A", 1):
                pass
    with limiter.slot("A", None):  # not sent: the default, 1
        with pytest.raises(Busy):
            with limiter.slot("A", None):
                pass


def test_caching_authority_never_caches_pki_operation():
    inner = TableAuthority()
    clock = Clock()
    caching = CachingAuthority(inner, ttl=5, clock=clock)
    from mdmscep_common.proxy_urls import ProxyId
    sid = ProxyId(HOST, PROFILE, CA, CODE)
    for _ in range(2):
        caching.authorize(sid, "GetCACaps")
        caching.authorize(sid, "PKIOperation")
    assert inner.calls == [(CODE, "GetCACaps"), (CODE, "PKIOperation"), (CODE, "PKIOperation")]
    clock.now += 5
    caching.authorize(sid, "GetCACaps")
    assert len(inner.calls) == 4


def test_processor_reasons_never_echo_the_code():
    assert _reason_for_host(f"code {CODE} is\nused", CODE) == "code (code) is used"
    assert _reason_for_host("", CODE) == "not allowed"


@pytest.mark.parametrize("body, ca", [
    ({"kind": "certificate_authority", "action": "edited", "id": 3, "name": "Test_SCEP",
      "resend": True}, "Test_SCEP"),
    ({"kind": "profile", "action": "added"}, None),
    ({"kind": "certificate_authority", "name": 3}, None),
    (["not", "an", "object"], None),
])
def test_config_changed_bodies(body, ca):
    assert ca_to_forget(body) == ca


# --- bad input never gives a 5xx ------------------------------------------------------------

_path_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@hyp_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_id=_path_text, operation=st.one_of(st.none(), st.sampled_from(
    ["GetCACaps", "GetCACert", "PKIOperation", "", "x"]), _path_text),
    message=st.one_of(st.none(), _path_text), body=st.binary(max_size=300),
    method=st.sampled_from(["GET", "POST", "HEAD"]))
def test_no_input_gives_a_5xx(raw_id, operation, message, body, method):
    world = World()
    query = {} if operation is None else {"operation": operation}
    if message is not None:
        query["message"] = message
    response = world.client.open("/mdm/scep/proxy/" + quote(raw_id, safe=""), method=method,
                                 query_string=query, data=body if method == "POST" else None)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("path, query, headers", [
    ("/mdm/scep/proxy/%FF%FE,%C3,Test_SCEP,code", "operation=GetCACaps", {}),
    ("/mdm/scep/proxy/%zz", "operation=GetCACaps", {}),
    ("/mdm/scep/proxy/\xff\xfe,\xc3,Test_SCEP,code", "operation=GetCACaps", {}),  # raw bytes
    (World.path(), "operation=%FF", {}),
    (World.path(), "operation=PKIOperation&message=%FF%00", {}),
    (World.path(), "operation=PKIOperation&operation=GetCACaps", {"CONTENT_LENGTH": "abc"}),
    (World.path(), "operation=PKIOperation", {"CONTENT_LENGTH": "-5"}),
    (World.path(), "operation=PKIOperation", {"CONTENT_LENGTH": "99999999999999999999"}),
])
def test_odd_requests_are_4xx(world, path, query, headers):
    environ = {"REQUEST_METHOD": "POST" if "CONTENT_LENGTH" in headers else "GET",
               "PATH_INFO": path, "QUERY_STRING": query, **headers}
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    base = EnvironBuilder(method=environ["REQUEST_METHOD"]).get_environ()
    base.update(environ)
    base["wsgi.input"] = io.BytesIO(b"\x00" * 10)
    _, status, _ = run_wsgi_app(world.app, base)
    assert 400 <= int(status[:3]) < 500, status
    assert world.authority.calls == []
