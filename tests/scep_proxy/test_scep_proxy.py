"""scep-proxy against real parts: the real `scepclient` and `scepserver` (micromdm, Debian `scep`),
a fake ProfileAuthority over real gRPC, and real RabbitMQ for scep.result (through scep-proxy's
outbox and its relay, on the test database) and config.changed.

The proxy runs in-process (Flask's test client, or Werkzeug's server in a thread when scepclient
must reach it); one test runs `scep-proxy http` under gunicorn as in production.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import kombu
import pytest
from cryptography import x509
from werkzeug.serving import WSGIRequestHandler, make_server

from mdmscep_common import bus
from mdmscep_common.db import Database
from mdmscep_common.health import HealthChecks
from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, Outbox, OutboxRelay
from scep_proxy.app import build_proxy, create_app
from scep_proxy.config_events import ConfigListener
from scep_proxy.outcome_records import OutcomeStore
from scep_proxy.profile_authority_client import ProfileAuthorityClient
from scep_proxy.scep_protocol import MAX_MESSAGE_BYTES, encode_get_message, read_cert_rep
from scep_proxy.settings import ScepProxySettings
from tests.support.fake_profile_authority import FakeAuthorityServer
from tests.support.ports import free_port, wait_for_port
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls, tls_env
from tests.support.serving import serve_in_thread
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

CHALLENGE = "custom-ca-challenge"
CA = "Test_SCEP"
TEXT_PLAIN = "text/plain; charset=utf-8"


# --- helpers: CAs that misbehave, a recording relay, the proxy under test ----------------------

class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):  # request lines carry one-time codes
        pass


class _Served:
    """An http.server in a thread; subclasses set `handler`."""

    handler: type[http.server.BaseHTTPRequestHandler]

    def __init__(self):
        owner = self

        class Handler(self.handler):
            server_owner = owner
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve_in_thread(self._server)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/scep"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    def _relay(self):
        relay = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        query = urlsplit(self.path).query
        answer = relay.client.request(self.command, relay.target + "?" + query, content=body,
                                      headers={"Content-Type": self.headers.get("Content-Type",
                                                                                "")})
        relay.exchanges.append({"method": self.command, "query": query, "request": body,
                                "status": answer.status_code,
                                "content_type": answer.headers.get("content-type"),
                                "body": answer.content})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", ""))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self):
        self._relay()

    def do_POST(self):
        self._relay()


class RecordingCa(_Served):
    """A relay in front of a real CA that keeps each exchange: what the CA really answered."""

    handler = _RelayHandler

    def __init__(self, target: str):
        self.target = target
        self.client = httpx.Client(headers={"Accept-Encoding": "identity"})
        self.exchanges: list[dict] = []
        super().__init__()

    def pki_operations(self) -> list[dict]:
        return [e for e in self.exchanges if "PKIOperation" in e["query"]]

    def close(self):
        super().close()
        self.client.close()


class _StubHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        stub = self.server_owner
        stub.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(stub.status)
        self.send_header("Content-Type", stub.content_type)
        self.send_header("Content-Length", str(len(stub.body)))
        self.end_headers()
        self.wfile.write(stub.body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()


class StubCa(_Served):
    """A 'CA' that always gives the same answer."""

    handler = _StubHandler

    def __init__(self, status: int, content_type: str, body: bytes):
        self.status, self.content_type, self.body = status, content_type, body
        self.requests = 0
        super().__init__()


class SilentCa:
    """Accepts connections and never answers (the kernel's backlog does the accepting)."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/scep"

    def close(self):
        self._socket.close()


def _recording(app, record: list):
    """WSGI middleware keeping every answer the proxy gave: (query, status, headers, body)."""
    def wsgi(environ, start_response):
        seen = {}

        def capture(status, headers, exc_info=None):
            seen["status"], seen["headers"] = status, dict(headers)
            return start_response(status, headers, exc_info)
        body = b"".join(app(environ, capture))
        record.append({"query": environ.get("QUERY_STRING", ""), "status": int(seen["status"][:3]),
                       "headers": seen["headers"], "body": body})
        return [body]
    return wsgi


class Proxy:
    """The proxy app as app.py builds it, with the fake authority and test settings."""

    def __init__(self, authority_address: str, publisher, authority_client=None, **env: str):
        self.settings = ScepProxySettings.from_env({
            "PROCESSOR_GRPC_ADDR": authority_address,
            **tls_env("scep-proxy"),
            "SCEP_UPSTREAM_TIMEOUT": "3", **env})
        self.parts = build_proxy(self.settings, publisher, authority_client)
        self.proxy = self.parts.proxy
        self.app = create_app(self.proxy, HealthChecks({}))
        self.client = self.app.test_client()
        self.answers: list[dict] = []
        self._server = None

    def serve(self) -> str:
        self._server = make_server("127.0.0.1", 0, _recording(self.app, self.answers),
                                   threaded=True, request_handler=QuietHandler)
        serve_in_thread(self._server)
        return f"http://127.0.0.1:{self._server.server_port}"

    def close(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.parts.close()


def proxy_path(host: str, profile: str, code: str, ca: str = CA) -> str:
    return "/mdm/scep/proxy/" + quote(f"{host},{profile},{ca},{code}", safe="")


def grant(fake, ca: str = CA, status: str = "pending", ttl: float = 3600) -> tuple[str, str, str]:
    """A new pending delivery with a fresh code: (host_uuid, profile_uuid, code)."""
    host, profile = str(uuid.uuid4()).upper(), str(uuid.uuid4())
    fake.add_delivery(host, profile, ca, status=status)
    return host, profile, fake.new_code(host, profile, ttl=ttl)


def scepclient(server_url: str, workdir: Path, challenge: str = CHALLENGE,
               cn: str = "proxied-host") -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["scepclient", "-server-url", server_url, "-challenge", challenge, "-cn", cn,
         "-private-key", str(workdir / "key.pem"), "-certificate", str(workdir / "cert.pem")],
        capture_output=True, text=True, timeout=30, cwd=workdir)


class CaLog:
    """The requests a scepserver logged (it runs with -debug) since this object was made."""

    def __init__(self, server):
        self._server = server
        self._mark = len(server.log())

    def requests(self) -> list[str]:
        return [line for line in self._server.log()[self._mark:].splitlines() if " op=" in line]


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def authority():
    server = FakeAuthorityServer()
    yield server
    server.stop()


@pytest.fixture
def fake(authority, custom_ca):
    authority.fake.add_ca(CA, custom_ca.url)
    return authority.fake


@pytest.fixture
def publisher():
    return RecordingPublisher()


@pytest.fixture
def make_proxy(authority, publisher):
    made = []

    def make(**env) -> Proxy:
        proxy = Proxy(env.pop("authority_address", authority.address),
                      env.pop("publisher", publisher), env.pop("authority_client", None), **env)
        made.append(proxy)
        return proxy
    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture(scope="module")
def pkcs_requests(custom_ca, tmp_path_factory):
    """Real PKCSReq messages from scepclient (right and wrong challenge), captured on their way
    straight to the scepserver."""
    relay = RecordingCa(custom_ca.url)
    root = tmp_path_factory.mktemp("captured")
    try:
        captured = {}
        for name, challenge in (("right", CHALLENGE), ("wrong", "not-the-challenge")):
            scepclient(relay.url, root / name, challenge, cn=f"captured-{name}")
            captured[name] = relay.pki_operations()[-1]["request"]
        return captured
    finally:
        relay.close()


# --- the happy paths -------------------------------------------------------------------------

def test_scepclient_gets_a_certificate_through_the_proxy_and_renews_it(
        custom_ca, fake, make_proxy, publisher, tmp_path):
    base = make_proxy().serve()
    host, profile, code = grant(fake)
    ca_log = CaLog(custom_ca)

    result = scepclient(base + proxy_path(host, profile, code), tmp_path / "device", cn="device-1")
    assert result.returncode == 0, result.stderr
    ca_cert = x509.load_pem_x509_certificate(custom_ca.ca_pem)
    cert = x509.load_pem_x509_certificate((tmp_path / "device" / "cert.pem").read_bytes())
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    assert [line.split(" op=")[1].split()[0] for line in ca_log.requests()] == \
        ["GetCACert", "GetCACaps", "PKIOperation"]
    assert fake.code_used(code)
    assert [c.operation for c in fake.calls_for(code)] == ["GetCACert", "GetCACaps", "PKIOperation"]
    [(key, published)] = publisher.messages
    # The real CA's time (a few ms) and the wait for one of its slots (none: nothing else ran).
    assert 0 < published.pop("latency_ms") < 10_000 and published.pop("slot_wait_ms") < 1000
    assert (key, published) == ("scep.result", {
        "host_uuid": host, "profile_uuid": profile, "ca_name": CA, "outcome": "issued",
        "fail_info": "", "http_status": 200, "detail": "the CA issued the certificate",
        "ca_unreachable": False, "code_sha256": code_sha256(code)})

    # Renewal: the same key and certificate, a new code; scepclient sends a RenewalReq.
    renewal_code = fake.new_code(host, profile)
    result = scepclient(base + proxy_path(host, profile, renewal_code), tmp_path / "device",
                        cn="device-1")
    assert result.returncode == 0, result.stderr
    renewed = x509.load_pem_x509_certificate((tmp_path / "device" / "cert.pem").read_bytes())
    assert renewed.serial_number != cert.serial_number
    assert "RenewalReq (17)" in custom_ca.log()
    assert publisher.messages[-1][1]["outcome"] == "issued"


def test_wrong_challenge_gets_the_cas_own_failure_unchanged(custom_ca, fake, make_proxy,
                                                            publisher, tmp_path):
    relay = RecordingCa(custom_ca.url)
    fake.cas[CA] = (fake.cas[CA][0], relay.url)
    try:
        proxy = make_proxy()
        base = proxy.serve()
        host, profile, code = grant(fake)
        result = scepclient(base + proxy_path(host, profile, code), tmp_path / "device",
                            challenge="not-the-challenge")
        assert result.returncode != 0
        assert "badRequest" in result.stderr + result.stdout

        from_ca = relay.pki_operations()[-1]
        to_host = [a for a in proxy.answers if "PKIOperation" in a["query"]][-1]
        assert to_host["status"] == from_ca["status"] == 200
        assert to_host["headers"]["Content-Type"] == from_ca["content_type"]
        assert to_host["body"] == from_ca["body"]  # byte for byte
        status = read_cert_rep(to_host["body"])
        assert (status.pki_status, status.fail_info) == ("FAILURE", "badRequest")
        assert fake.code_used(code)
        assert publisher.messages[-1][1]["latency_ms"] > 0  # the CA answered
        assert publisher.messages[-1][1] | {"detail": "", "latency_ms": 1, "slot_wait_ms": 0} == {
            "host_uuid": host, "profile_uuid": profile, "ca_name": CA,
            "outcome": "scep_failure", "fail_info": "badRequest", "http_status": 200, "detail": "",
            "ca_unreachable": False, "code_sha256": code_sha256(code), "latency_ms": 1,
            "slot_wait_ms": 0}
    finally:
        relay.close()


def test_pki_operation_by_get_with_a_percent_encoded_base64_message(
        custom_ca, fake, make_proxy, publisher, pkcs_requests):
    proxy = make_proxy()
    host, profile, code = grant(fake)
    message = encode_get_message(pkcs_requests["right"])
    assert "+" in message or "/" in message  # so the percent-encoding matters
    ca_log = CaLog(custom_ca)
    response = proxy.client.get(proxy_path(host, profile, code)
                                + "?operation=PKIOperation&message=" + quote(message, safe=""))
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "application/x-pki-message"
    assert read_cert_rep(response.data).pki_status == "SUCCESS"
    assert any("op=PKIOperation" in line for line in ca_log.requests())
    assert fake.code_used(code)
    assert publisher.messages[-1][1]["outcome"] == "issued"


# --- refusals: 4xx before the CA, the code used up only by the authority ------------------------

def _refusal_setups():
    """(name, expected status, setup(fake) -> (path, code or None, CA named in the reason))."""
    def malformed(raw, named=None):
        return lambda fake: ("/mdm/scep/proxy/" + quote(raw, safe=""), None, named)

    def with_grant(status="pending", ttl=3600.0, host=None, profile=None, ca=CA, used=False,
                   code=None):
        def setup(fake):
            real_host, real_profile, real_code = grant(fake, status=status, ttl=ttl)
            if used:
                fake.deliveries[(real_host, real_profile)].used.add(real_code)
            the_code = code or real_code
            return (proxy_path(host or real_host, profile or real_profile, the_code, ca),
                    the_code, ca)
        return setup

    return [
        ("missing parts", 400, malformed("HOST,profile,Test_SCEP")),
        ("too many parts", 400, malformed("HOST,profile,Test_SCEP,code,more")),
        ("empty part", 400, malformed("HOST,,Test_SCEP,code", named=CA)),
        ("bad CA name", 400, malformed("HOST,profile,Test-SCEP,code")),
        ("bad host", 400, malformed("HOST!,profile,Test_SCEP,code", named=CA)),
        ("no id", 400, lambda fake: ("/mdm/scep/proxy/", None, None)),
        ("unknown host", 404, with_grant(host="00008030-001A2B3C4D5E802E")),
        ("unknown profile", 404, with_grant(profile=str(uuid.uuid4()))),
        ("unknown CA", 404, with_grant(ca="No_Such_CA")),
        ("not pending", 409, with_grant(status="verifying")),
        ("unknown code", 403, with_grant(code="no-such-code")),
        ("used code", 403, with_grant(used=True)),
        ("expired code", 403, with_grant(ttl=-1)),
    ]


@pytest.mark.parametrize("name, status, setup", _refusal_setups(),
                         ids=[case[0].replace(" ", "-") for case in _refusal_setups()])
def test_refusals_never_reach_the_ca(name, status, setup, custom_ca, fake, make_proxy,
                                     pkcs_requests):
    proxy = make_proxy()
    ca_log = CaLog(custom_ca)
    get_message = quote(encode_get_message(pkcs_requests["right"]), safe="")
    path, code, named_ca = setup(fake)
    used_before = code is not None and fake.code_used(code)
    for method, query, body in (("GET", "operation=GetCACaps", None),
                                ("GET", "operation=GetCACert", None),
                                ("POST", "operation=PKIOperation", pkcs_requests["right"]),
                                ("GET", f"operation=PKIOperation&message={get_message}", None)):
        response = proxy.client.open(f"{path}?{query}", method=method, data=body)
        assert response.status_code == status, (method, query, response.data)
        assert response.headers["Content-Type"] == TEXT_PLAIN
        text = response.get_data(as_text=True)
        assert len(text) < 300 and (code is None or code not in text)
        if named_ca:
            assert f"CA {named_ca}" in text
    assert ca_log.requests() == []
    if status == 400:
        assert fake.calls == []  # malformed: not even asked
    else:
        assert {c.operation for c in fake.calls} == {"GetCACaps", "GetCACert", "PKIOperation"}
        assert fake.code_used(code) == used_before


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x82\xff\xff", b"-----BEGIN PKCS7-----"])
def test_garbage_pki_operation_is_400_and_leaves_the_code_usable(
        body, custom_ca, fake, make_proxy, tmp_path):
    proxy = make_proxy()
    base = proxy.serve()
    host, profile, code = grant(fake)
    path = proxy_path(host, profile, code)
    ca_log = CaLog(custom_ca)
    answers = [httpx.post(f"{base}{path}?operation=PKIOperation", content=body,
                          headers={"Content-Type": "application/x-pki-message"}),
               httpx.get(f"{base}{path}?operation=PKIOperation&message="
                         + quote(encode_get_message(body), safe="")),
               httpx.get(f"{base}{path}?operation=PKIOperation&message=%25not%2Bbase64%3F")]
    for response in answers:
        assert response.status_code == 400, response.text
        assert f"CA {CA}" in response.text
    assert fake.calls_for(code, "PKIOperation") == [] and not fake.code_used(code)
    assert ca_log.requests() == []

    result = scepclient(base + path, tmp_path / "device")
    assert result.returncode == 0, result.stderr


# --- the CA misbehaves -----------------------------------------------------------------------

def test_ca_down_is_502_within_the_timeout(fake, make_proxy, publisher, pkcs_requests):
    fake.cas[CA] = (1, f"http://127.0.0.1:{free_port()}/scep")  # nothing listens there
    proxy = make_proxy(SCEP_UPSTREAM_TIMEOUT="3")
    host, profile, code = grant(fake)
    path = proxy_path(host, profile, code)
    started = time.monotonic()
    caps = proxy.client.get(path + "?operation=GetCACaps")
    # A host's attempt that ends at GetCACaps is reported too (the code is not used up), so the
    # processor gives it back like one that met the outage at PKIOperation.
    assert [m[1]["ca_unreachable"] for m in publisher.messages] == [True]
    assert publisher.messages[0][1]["code_sha256"] == code_sha256(code)
    pki = proxy.client.post(path + "?operation=PKIOperation", data=pkcs_requests["right"])
    assert time.monotonic() - started < 3
    for response in (caps, pki):
        assert response.status_code == 502
        assert response.headers["Content-Type"] == TEXT_PLAIN
        assert f"CA {CA}" in response.get_data(as_text=True)
    assert fake.code_used(code)  # the request was well-formed and authorized
    assert publisher.messages[-1][1]["outcome"] == "upstream_error"
    assert publisher.messages[-1][1]["http_status"] == 502
    assert publisher.messages[-1][1]["ca_unreachable"] is True  # the attempt is given back


def code_sha256(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def test_slow_ca_is_504(fake, make_proxy, publisher, pkcs_requests):
    silent = SilentCa()
    fake.cas[CA] = (1, silent.url)
    try:
        proxy = make_proxy(SCEP_UPSTREAM_TIMEOUT="1")
        host, profile, code = grant(fake)
        path = proxy_path(host, profile, code)
        started = time.monotonic()
        caps = proxy.client.get(path + "?operation=GetCACaps")
        assert 0.9 < time.monotonic() - started < 3
        pki = proxy.client.post(path + "?operation=PKIOperation", data=pkcs_requests["right"])
        for response in (caps, pki):
            assert response.status_code == 504
            assert f"CA {CA}" in response.get_data(as_text=True)
        assert publisher.messages[-1][1]["outcome"] == "timeout"
        assert publisher.messages[-1][1]["http_status"] == 504
        # The request reached the CA, which may still issue: an attempt like a 5xx. GetCACaps
        # timing out was not reported.
        assert [m[1]["ca_unreachable"] for m in publisher.messages] == [False]
    finally:
        silent.close()


@pytest.mark.parametrize("status, content_type, body, expected", [
    (500, "text/plain", b"internal error", 502),
    (503, "text/html", b"<h1>maintenance</h1>", 502),
    (404, "text/html; charset=iso-8859-1", b"<h1>no such path</h1>", 404),
    (400, "application/octet-stream", b"\x00\x01bad", 400),
])
def test_ca_error_statuses(status, content_type, body, expected, fake, make_proxy, publisher,
                           pkcs_requests):
    stub = StubCa(status, content_type, body)
    fake.cas[CA] = (1, stub.url)
    try:
        proxy = make_proxy()
        host, profile, code = grant(fake)
        path = proxy_path(host, profile, code)
        for response in (proxy.client.get(path + "?operation=GetCACert"),
                         proxy.client.post(path + "?operation=PKIOperation",
                                           data=pkcs_requests["right"])):
            assert response.status_code == expected
            if expected == status:  # 4xx: the CA's own answer, unchanged
                assert (response.data, response.headers["Content-Type"]) == (body, content_type)
            else:
                assert f"CA {CA}" in response.get_data(as_text=True)
        assert publisher.messages[-1][1]["outcome"] == "upstream_error"
        assert publisher.messages[-1][1]["ca_unreachable"] is False  # the CA answered: an attempt
    finally:
        stub.close()


def test_oversized_messages_are_413_before_anything(custom_ca, fake, make_proxy):
    proxy = make_proxy()
    base = proxy.serve()
    host, profile, code = grant(fake)
    path = proxy_path(host, profile, code)
    ca_log = CaLog(custom_ca)
    too_big = b"\x30" * (MAX_MESSAGE_BYTES + 1)
    posted = httpx.post(f"{base}{path}?operation=PKIOperation", content=too_big)
    streamed = httpx.post(f"{base}{path}?operation=PKIOperation",
                          content=iter([too_big[:1 << 20], too_big[1 << 20:]]))  # chunked
    by_get = proxy.client.get(f"{path}?operation=PKIOperation&message="
                              + encode_get_message(too_big))
    for response in (posted, streamed, by_get):
        assert response.status_code == 413
        assert f"CA {CA}" in response.text
    assert fake.calls == [] and ca_log.requests() == []


def test_per_ca_limit_refuses_with_retry_after_and_keeps_the_code(fake, make_proxy,
                                                                 pkcs_requests):
    silent = SilentCa()
    fake.cas[CA] = (1, silent.url)
    proxy = make_proxy(SCEP_PROXY_CA_CONCURRENCY="1", SCEP_PROXY_QUEUE_TIMEOUT="0.3",
                       SCEP_UPSTREAM_TIMEOUT="2")
    first, second = grant(fake), grant(fake)
    holder = threading.Thread(target=proxy.app.test_client().post, daemon=True, kwargs={
        "path": proxy_path(*first) + "?operation=PKIOperation", "data": pkcs_requests["right"]})
    try:
        holder.start()
        assert eventually(lambda: fake.calls_for(first[2], "PKIOperation"))
        started = time.monotonic()
        response = proxy.client.post(proxy_path(*second) + "?operation=PKIOperation",
                                     data=pkcs_requests["right"])
        assert response.status_code == 503
        assert 0.25 < time.monotonic() - started < 1.5
        assert int(response.headers["Retry-After"]) > 0
        assert f"CA {CA}" in response.get_data(as_text=True)
        # Authorized before waiting for a slot (forged URLs never wait), then given back.
        assert [c.operation for c in fake.calls_for(second[2])] == ["PKIOperation", "GiveBack"]
        assert not fake.code_used(second[2])
    finally:
        holder.join(10)
        silent.close()


def test_processor_unreachable_is_503_with_retry_after(fake, make_proxy, pkcs_requests):
    # The proxy's client waits for the processor up to its deadline (5 s as built): 1 s here.
    unreachable = ProfileAuthorityClient(f"127.0.0.1:{free_port()}", service_tls("scep-proxy"),
                                         timeout=1.0)
    try:
        proxy = make_proxy(authority_client=unreachable)
        path = proxy_path(*grant(fake))
        for response in (proxy.client.get(path + "?operation=GetCACaps"),
                         proxy.client.post(path + "?operation=PKIOperation",
                                           data=pkcs_requests["right"])):
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            assert f"CA {CA}" in response.get_data(as_text=True)
    finally:
        unreachable.close()


# --- caches and the bus ----------------------------------------------------------------------

def _url_via(amqp_url: str, port: int) -> str:
    parts = urlsplit(amqp_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def test_ca_answers_are_cached_until_config_changed(custom_ca, fake, make_proxy, amqp_url):
    proxy = make_proxy(SCEP_PROXY_CACHE_TTL="60")
    forgotten: list[str | None] = []
    listener = ConfigListener(amqp_url, lambda ca: (proxy.proxy.forget_ca(ca),
                                                    forgotten.append(ca))).start()
    try:
        assert listener.ready.wait(10)
        ca_log = CaLog(custom_ca)
        host, profile, code = grant(fake)
        path = proxy_path(host, profile, code)
        answers = [proxy.client.get(path + "?operation=GetCACert") for _ in range(3)]
        assert {(a.status_code, a.data) for a in answers} == {(200, answers[0].data)}
        assert len(ca_log.requests()) == 1
        assert len(fake.calls_for(code)) == 1  # the authorization was cached too

        bus.Publisher(amqp_url).publish(bus.CONFIG_CHANGED, {
            "kind": "certificate_authority", "action": "edited", "id": 1, "name": CA,
            "resend": True})
        assert eventually(lambda: CA in forgotten)
        assert proxy.client.get(path + "?operation=GetCACert").data == answers[0].data
        assert len(ca_log.requests()) == 2
    finally:
        listener.stop()


def test_config_listener_survives_a_broker_connection_loss(amqp_url):
    relay = TcpProxy(urlsplit(amqp_url).port or 5672)
    forgotten: list[str | None] = []
    listener = ConfigListener(_url_via(amqp_url, relay.port), forgotten.append).start()
    try:
        assert listener.ready.wait(10)
        relay.cut()
        assert eventually(lambda: listener.connections >= 2, 20)
        bus.Publisher(amqp_url).publish(bus.CONFIG_CHANGED, {"kind": "certificate_authority",
                                                             "name": "Other_CA"})
        assert eventually(lambda: "Other_CA" in forgotten)
        assert forgotten.count(None) >= 2  # everything dropped after each (re)connection
    finally:
        listener.stop()
        relay.close()


def test_scep_result_reaches_the_bus_through_the_outbox(fake, make_proxy, amqp_url, database_url,
                                                        pkcs_requests):
    """As app.py and `scep-proxy grpc` do it: the outcome and its ca_requests row commit in one
    transaction, and the relay publishes the event with its id (message_id and body)."""
    queue = bus.durable_queue(f"test.scep-result.{uuid.uuid4().hex[:8]}", [bus.SCEP_RESULT])
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
    db = Database(database_url, max_size=2, name="tests-scep-result").open()
    relay = OutboxRelay(db, SCEP_PROXY_OUTBOX, amqp_url, database_url).start()
    ca_name = f"Outbox_{uuid.uuid4().hex[:8]}"
    fake.add_ca(ca_name, fake.cas[CA][1])
    try:
        store = OutcomeStore(db, Outbox(SCEP_PROXY_OUTBOX))
        proxy = make_proxy(publisher=store)
        host, profile, code = grant(fake, ca=ca_name)
        response = proxy.client.post(proxy_path(host, profile, code, ca=ca_name)
                                     + "?operation=PKIOperation", data=pkcs_requests["wrong"])
        assert response.status_code == 200
        with kombu.Connection(amqp_url) as conn:
            bound = queue(conn.default_channel)
            message = None
            deadline = time.monotonic() + 10
            while message is None and time.monotonic() < deadline:
                message = bound.get(no_ack=True, accept=["json"])
                time.sleep(0.05 if message is None else 0)
            bound.delete()
        assert message is not None
        event_id = message.payload["event_id"]
        assert message.properties["message_id"] == event_id
        assert message.payload["latency_ms"] > 0  # the CA answered
        assert message.payload | {"detail": "", "latency_ms": 1, "slot_wait_ms": 0} == {
            "host_uuid": host, "profile_uuid": profile, "ca_name": ca_name,
            "outcome": "scep_failure", "fail_info": "badRequest", "http_status": 200, "detail": "",
            "ca_unreachable": False, "code_sha256": code_sha256(code), "event_id": event_id,
            "sequence": message.payload["sequence"], "latency_ms": 1, "slot_wait_ms": 0}
        with db.transaction() as conn:
            published = conn.execute("SELECT published_at FROM scep_proxy_outbox "
                                     "WHERE event_id = %s", (event_id,)).fetchone()
            requests = conn.execute("SELECT outcome FROM ca_requests WHERE ca_name = %s",
                                    (ca_name,)).fetchall()
        assert published["published_at"] is not None
        assert [r["outcome"] for r in requests] == ["scep_failure"]
    finally:
        store.close()
        relay.stop()
        with db.transaction() as conn:
            conn.execute("DELETE FROM ca_requests WHERE ca_name = %s", (ca_name,))
            conn.execute("DELETE FROM scep_proxy_outbox WHERE body->>'ca_name' = %s", (ca_name,))
        db.close()


def test_logs_never_carry_the_code(fake, make_proxy, pkcs_requests, caplog):
    caplog.set_level(logging.DEBUG)
    proxy = make_proxy()
    host, profile, code = grant(fake)
    path = proxy_path(host, profile, code)
    proxy.client.get(path + "?operation=GetCACaps")
    proxy.client.post(path + "?operation=PKIOperation", data=b"garbage")
    proxy.client.post(path + "?operation=PKIOperation", data=pkcs_requests["right"])
    proxy.client.post(path + "?operation=PKIOperation", data=pkcs_requests["right"])  # used
    fake.cas[CA] = (1, f"http://127.0.0.1:{free_port()}/scep")
    proxy.proxy.forget_ca(None)
    other = grant(fake)
    proxy.client.post(proxy_path(*other) + "?operation=PKIOperation", data=pkcs_requests["right"])
    assert any(r.message == "PKIOperation done" for r in caplog.records)
    for record in caplog.records:
        for secret in (code, other[2], CHALLENGE):
            assert secret not in str(record.__dict__)


# --- production shape: gunicorn, several workers, /metrics, SIGTERM ----------------------------

def test_under_gunicorn_with_metrics_and_graceful_stop(base_env, fake, tmp_path, authority):
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {**os.environ, **base_env, "SCEP_PROXY_HTTP_PORT": str(port),
           "PROCESSOR_GRPC_ADDR": authority.address, "HTTP_WORKERS": "2", "HTTP_THREADS": "4",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log_path = tmp_path / "proxy.log"
    process = subprocess.Popen([str(Path(sys.executable).parent / "scep-proxy"), "http"], env=env,
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=20)
        base = f"http://127.0.0.1:{port}"
        assert eventually(lambda: httpx.get(base + "/healthz").status_code == 200, 20), log_path.read_text()
        host, profile, code = grant(fake)
        result = scepclient(base + proxy_path(host, profile, code), tmp_path / "device")
        assert result.returncode == 0, result.stderr + log_path.read_text()
        unused = fake.new_code(host, profile)  # the first one is used up now
        for _ in range(6):  # spread over both workers
            caps = httpx.get(base + proxy_path(host, profile, unused) + "?operation=GetCACaps")
            assert caps.status_code == 200
        metrics = httpx.get(base + "/metrics").text
        assert 'scep_proxy_requests_total{operation="PKIOperation",status="200"} 1.0' in metrics
        assert 'scep_proxy_requests_total{operation="GetCACaps",status="200"} 7.0' in metrics
        assert 'scep_proxy_request_duration_seconds_count{ca="Test_SCEP",operation="GetCACert"}' \
            in metrics
        assert code not in metrics and host not in metrics and unused not in metrics
        assert code not in log_path.read_text() and unused not in log_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
