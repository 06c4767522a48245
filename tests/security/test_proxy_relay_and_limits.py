"""The SCEP proxy is no open relay, and a host id that keeps being refused is held back.

- The only URL the proxy ever contacts is the CA's, as the processor answers it for an authorized
  id: nothing in the request (path, query, message, headers) can point it elsewhere, it follows
  no redirect, and an authority answer that is not an http(s) URL is refused.
- Per client address (scep_proxy.client_limits): refusals by the processor spend a bucket; once
  empty the address gets 429 with Retry-After without the processor being asked; allowed requests
  spend nothing; the bucket refills; memory stays bounded; the host id in the URL plays no part.
- Metrics labels never carry a code, a host id or an unauthorized CA name.
"""

from __future__ import annotations

import http.server

import pytest

from scep_proxy.client_limits import REFUSAL_BURST, ClientRefusalLimiter
from scep_proxy.errors import TooManyRequests
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.proxy_world import CA, ProxyWorld
from tests.support.serving import serve_in_thread

PKCS_REQ = scep_message([("2.16.840.1.113733.1.9.2", "19")])


@pytest.fixture
def world():
    world = ProxyWorld()
    yield world
    world.close()


class Elsewhere:
    """A server the proxy must never reach; counts whatever arrives."""

    def __init__(self):
        owner = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve_in_thread(self._server)
        self.netloc = f"127.0.0.1:{self._server.server_address[1]}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def elsewhere():
    server = Elsewhere()
    yield server
    server.close()


def test_nothing_in_the_request_can_point_the_proxy_elsewhere(world, elsewhere):
    target = f"http://{elsewhere.netloc}/steal"
    host, profile, code = world.grant()
    path = world.path(host, profile, code)
    attempts = [
        (path, {"operation": "GetCACert", "message": target}),
        (path, {"operation": "GetCACaps", "url": target, "upstream": target}),
        (path + "/" + target, {"operation": "GetCACaps"}),
        (world.path(host, profile, code, ca=f"{CA}@{elsewhere.netloc}"), {"operation": "GetCACaps"}),
        ("/mdm/scep/proxy/" + target, {"operation": "GetCACaps"}),
        (path, {"operation": "GetCACaps", "operation_url": target}),
    ]
    for url, query in attempts:
        world.client.get(url, query_string=query,
                         headers={"Host": elsewhere.netloc, "X-Forwarded-Host": elsewhere.netloc,
                                  "Forwarded": f"host={elsewhere.netloc}"})
    assert elsewhere.hits == 0
    assert world.ca.requests and {(r.path, r.host_header) for r in world.ca.requests} == \
        {("/scep", world.ca.netloc)}


def test_a_ca_redirect_is_not_followed(world, elsewhere):
    class RedirectingCa(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://{elsewhere.netloc}/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET  # noqa: N815

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RedirectingCa)
    serve_in_thread(server)
    try:
        world.fake.add_ca("Redirecting", f"http://127.0.0.1:{server.server_address[1]}/scep")
        host, profile, code = world.grant(ca="Redirecting")
        path = world.path(host, profile, code, ca="Redirecting")
        answers = [world.client.get(path, query_string={"operation": "GetCACaps"}),
                   world.client.post(path + "?operation=PKIOperation", data=PKCS_REQ)]
    finally:
        server.shutdown()
        server.server_close()
    assert [a.status_code for a in answers] == [502, 502]
    assert all("Location" not in a.headers for a in answers)
    assert elsewhere.hits == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1/", "http:///nohost",
                                 "ftp://ca.example/scep", "javascript:alert(1)"])
def test_an_authority_answer_that_is_no_http_url_is_refused(world, url):
    world.fake.add_ca("Odd", url)
    host, profile, code = world.grant(ca="Odd")
    response = world.client.get(world.path(host, profile, code, ca="Odd"),
                                query_string={"operation": "GetCACaps"})
    assert response.status_code == 502 and "no usable SCEP URL" in response.get_data(as_text=True)


# --- per client address ----------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_bucket_empties_with_refusals_only_and_refills():
    clock = Clock()
    limiter = ClientRefusalLimiter(burst=3, refill_per_second=0.5, clock=clock)
    for _ in range(100):
        limiter.check("H")  # allowed requests never spend anything
    for _ in range(3):
        limiter.check("H")
        limiter.refused("H")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("H", CA)
    assert refused.value.status == 429 and refused.value.retry_after == 2
    assert "CA Test_SCEP" in refused.value.text()
    limiter.check("other")  # other addresses are not affected
    clock.now += 2
    limiter.check("H")  # one refusal back after 1 / rate seconds
    clock.now += 60
    limiter.check("H")
    assert limiter.tracked() == 0  # full buckets are forgotten


def test_buckets_are_bounded():
    limiter = ClientRefusalLimiter(burst=2, max_clients=100, clock=Clock())
    for i in range(10_000):
        limiter.refused(f"198.51.100.{i % 256}:{i}")
    assert limiter.tracked() == 100


def test_through_the_proxy_a_refused_client_gets_429_without_asking(world):
    host, profile, code = world.grant(status="verified")  # every request is refused (409)
    path = world.path(host, profile, code)
    statuses = [world.client.get(path, query_string={"operation": "GetCACaps"}).status_code
                for _ in range(REFUSAL_BURST + 3)]
    assert statuses == [409] * REFUSAL_BURST + [429] * 3
    limited = world.client.post(path + "?operation=PKIOperation", data=PKCS_REQ)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert len([c for c in world.fake.calls if c.host_uuid == host]) == REFUSAL_BURST
    assert not world.fake.code_used(code)
    # The same host id from another address is asked about as usual: the limit is the caller's.
    other = world.client.get(path, query_string={"operation": "GetCACaps"},
                             environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert other.status_code == 409


def test_refusals_under_a_hosts_id_do_not_hold_that_host_back(world):
    host, profile, code = world.grant()
    forged = world.path(host, profile, "forged-code")
    for _ in range(REFUSAL_BURST + 5):
        world.client.post(forged + "?operation=PKIOperation", data=PKCS_REQ,
                          environ_base={"REMOTE_ADDR": "127.0.0.7"})
    real = world.client.post(world.path(host, profile, code) + "?operation=PKIOperation",
                             data=PKCS_REQ, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert real.status_code == 200 and world.fake.code_used(code)


def test_a_busy_healthy_host_is_never_limited(world):
    host, profile, code = world.grant()
    path = world.path(host, profile, code)
    for _ in range(3 * REFUSAL_BURST):
        assert world.client.get(path, query_string={"operation": "GetCACaps"}).status_code == 200
    assert world.client.post(path + "?operation=PKIOperation", data=PKCS_REQ).status_code == 200


def test_metrics_labels_carry_no_code_host_or_unknown_ca(world):
    host, profile, code = world.grant()
    world.client.get(world.path(host, profile, code), query_string={"operation": "GetCACaps"})
    world.client.get(world.path(host, profile, "guessed-code"), query_string={"operation": "GetCACaps"})
    world.client.get(world.path("X" * 30, "p", "not_a_ca_Zq9", "c"),
                     query_string={"operation": "GetCACert"})
    world.client.get("/mdm/scep/proxy/a,b,c", query_string={"operation": "Evil_op_Zq9"})
    metrics = world.client.get("/metrics").get_data(as_text=True)
    for value in (host, profile, code, "guessed-code", "X" * 30, "not_a_ca_Zq9", "Evil_op_Zq9"):
        assert value not in metrics, value
    assert 'ca="Test_SCEP"' in metrics
