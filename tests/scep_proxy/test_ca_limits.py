"""The per-CA limit holds across proxy replicas: two proxy instances, each with its own
connection pool (as two replicas are), connected as scep-proxy's own database role, share one
CA's slots through PostgreSQL. The limit is the CA's max_concurrent_requests as the authorization
carries it (below the proxies' default). A counting relay in front of the real scepserver
measures how many PKIOperations the CA sees at once."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.serving import make_server

from mdmscep_common.ca_keys import slot_lock_class
from mdmscep_common.health import HealthChecks
from mdmscep_common.service_database import service_dsn
from scep_proxy.app import build_proxy, create_app
from scep_proxy.limits import FleetCaLimiter
from tests.conftest import SERVER_PRIVATE_KEY
from tests.scep_proxy.test_scep_proxy import CHALLENGE, grant, proxy_path, scepclient
from tests.support.fake_profile_authority import FakeAuthorityServer
from tests.support.service_certs import tls_env
from tests.support.serving import serve_in_thread
from tests.support.settings import load_settings
from tests.support.waiting import eventually

CA = "Limited_CA"
LIMIT = 2
DEFAULT_LIMIT = 4  # SCEP_PROXY_CA_CONCURRENCY: what applies when no limit comes with it


class CountingRelay:
    """Forwards to the CA, holding each PKIOperation 0.15 s, and records peak concurrency."""

    def __init__(self, target: str):
        relay = self
        self.in_flight = self.peak = self.pki_operations = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                pki = "PKIOperation" in self.path
                if pki:
                    with relay._lock:
                        relay.in_flight += 1
                        relay.pki_operations += 1
                        relay.peak = max(relay.peak, relay.in_flight)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                    if pki:
                        time.sleep(0.15)  # a slow CA makes overlapping requests visible
                    request = urllib.request.Request(target + self.path, data=body,
                                                     method=self.command)
                    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                        data, status = answer.read(), answer.status
                        content_type = answer.headers.get("Content-Type", "")
                finally:
                    if pki:
                        with relay._lock:
                            relay.in_flight -= 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/scep"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def limited_ca(custom_ca, clean_state):
    relay = CountingRelay(custom_ca.url.removesuffix("/scep"))
    yield relay
    relay.close()


def test_the_limit_holds_across_two_replicas(limited_ca, database_url, tmp_path):
    authority = FakeAuthorityServer()
    authority.fake.add_ca(CA, limited_ca.url, max_concurrent_requests=LIMIT)
    replicas, servers = [], []
    for _ in range(2):
        settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                                  "DATABASE_URL": database_url,
                                  "PROCESSOR_GRPC_ADDR": authority.address,
                                  **tls_env("scep-proxy"),
                                  "SCEP_PROXY_QUEUE_TIMEOUT": "30"})
        limiter = FleetCaLimiter(service_dsn(database_url, "scep-proxy"), DEFAULT_LIMIT, 30.0,
                                 max_connections=8)
        parts = build_proxy(settings, _NoOutcomes(), limiter=limiter)
        parts.closers.append(limiter.close)
        server = make_server("127.0.0.1", 0, create_app(parts.proxy, HealthChecks({})),
                             threaded=True)
        serve_in_thread(server)
        replicas.append((parts, f"http://127.0.0.1:{server.server_port}"))
        servers.append(server)
    try:
        def enroll(n):
            # micromdm's scepserver may still fail one of two concurrent requests (its serial
            # file races): like a device, try again with a fresh delivery and code. Each attempt
            # has its own CN: a race can leave `<CN>.<serial>.pem` written with the serial not
            # advanced, and the same CN would then meet that file again ("file exists").
            for attempt in range(3):
                host, profile, code = grant(authority.fake, ca=CA)
                base = replicas[(n + attempt) % 2][1]
                done = scepclient(base + proxy_path(host, profile, code, ca=CA),
                                  tmp_path / f"c{n}-{attempt}", challenge=CHALLENGE,
                                  cn=f"limited-{n}-{attempt}")
                if done.returncode == 0:
                    break
            return done.returncode, done.stdout + done.stderr

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(enroll, range(10)))
        failures = [out for code, out in results if code != 0]
        assert not failures, failures[:2]
        assert limited_ca.pki_operations >= 10
        print(f"\npeak PKIOperations in flight at the CA: {limited_ca.peak} (limit {LIMIT}, "
              "two replicas)")
        assert 1 <= limited_ca.peak <= LIMIT
    finally:
        for server in servers:
            server.shutdown()
        for parts, _ in replicas:
            parts.close()
        authority.stop()


def test_a_request_for_a_busy_ca_waits_in_postgresql_for_the_slot(database_url, db_conn):
    """A request that finds the CA's slots taken queues for one in PostgreSQL (woken when it is
    released), rather than polling and leaving the CA idle between a release and its next look."""
    limiter = FleetCaLimiter(service_dsn(database_url, "scep-proxy"), DEFAULT_LIMIT, 10.0,
                             max_connections=4)
    ca = f"Busy_CA_{uuid.uuid4().hex[:8]}"
    holding, release, served = threading.Event(), threading.Event(), threading.Event()

    def first():
        with limiter.slot(ca, 1):
            holding.set()
            release.wait(10)

    def second():
        holding.wait(10)
        with limiter.slot(ca, 1):
            served.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        def queued() -> bool:
            return db_conn.execute(
                """SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                     AND objsubid = 2 AND classid::bigint = (%s::bigint & 4294967295)
                     AND database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database())""",
                (slot_lock_class(ca),)).fetchone()["n"] == 1

        assert eventually(queued, 5, 0.02), "the second request waits in PostgreSQL's lock queue"
        assert not served.is_set()
        release.set()
        assert served.wait(5)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
        limiter.close()


class _NoOutcomes:
    def record(self, outcome, latency_ms):
        pass
