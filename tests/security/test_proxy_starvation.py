"""Forged SCEP requests cannot starve a CA of the hosts that hold a real one-time code.

Real parts: the profile-processor's ProfileAuthority (ScepAuthority over gRPC with mutual TLS, on
the test database), the proxy as app.py builds it for production: the fleet-wide per-CA limit
(FleetCaLimiter: PostgreSQL advisory locks; OutcomeStore: outcome rows in ca_requests, with
their scep.result in scep-proxy's outbox) and the shared count of
refusals per client address (SharedClientRefusalLimiter), served on a loopback port, the real
scepserver as the CA and the real scepclient as the host. The admin's statistics
are read with admin-config's own CertificateAuthorityService.stats, its owners' servicers called
in-process over the proxy's rows (tests/support/owner_doubles.py).

- Hundreds of well-formed, forged PKIOperations in parallel (bounded in count and time, from
  other loopback addresses) are refused by the processor before any CA slot is taken: none holds
  a slot, none is counted as refused_busy (statistics or metrics), and each address is answered
  429 with Retry-After once its refusals are spent. Meanwhile a real host gets its certificate
  through the proxy without a single 503, though the CA takes one request at a time.
- A request with a real code refused by the per-CA limit (503 + Retry-After) keeps its code
  (GiveBackScepCode), and the host's retry with the same URL gets its certificate.
- GiveBackScepCode gives back only a code AuthorizeScep used up lately for a pending delivery.
- The CA's max_concurrent_requests comes with each authorization: an admin's change applies
  from the next request on.
- Refusals per client address are counted for every worker and replica (two proxies here): a
  forger is not granted a burst per process.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from urllib.parse import quote

import httpx
import psycopg
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import WSGIRequestHandler, make_server

from admin_config.certificate_authorities import CertificateAuthorityService, announce_ca
from admin_config.store import ActivityStore, CertificateAuthorityStore, ProfileStore
from mdmscep.v1 import profile_authority_pb2_grpc
from mdmscep_common.ca_keys import slot_lock_class
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.one_time_codes import code_sha256
from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, Outbox
from mdmscep_common.service_tls import PROFILE_PROCESSOR
from profile_processor.scep_authorization import (
    GIVE_BACK_WINDOW_SECONDS,
    ProfileAuthorityServicer,
    ScepAuthority,
)
from scep_proxy.app import build_proxy, create_app
from scep_proxy.client_limits import (
    REFUSAL_BURST,
    REFUSALS_REFILL_PER_SECOND,
    REFUSALS_TABLE,
    SharedClientRefusalLimiter,
)
from scep_proxy.limits import FleetCaLimiter
from scep_proxy.outcome_records import OutcomeStore
from scep_proxy.scep_protocol import OID_MESSAGE_TYPE
from tests.conftest import SERVER_PRIVATE_KEY
from tests.scep_proxy.test_scep_proxy import CHALLENGE, scepclient
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.owner_doubles import ca_requests, delivery_directory
from tests.support.processor_read_models import apply_recorded_events, copy_owned_rows_to_processor
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls, tls_env
from tests.support.settings import load_settings
from tests.support.waiting import eventually, wait_for

PKCS_REQ = scep_message([(OID_MESSAGE_TYPE, "19")])  # well-formed: passes the message check
FORGER_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 10)]
FORGER_THREADS = 24
MAX_FORGED = 3000  # bounded in count ...
FLOOD_SECONDS = 60.0  # ... and in time
QUEUE_TIMEOUT = "0.3"


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):  # request lines carry one-time codes
        pass


class Delivery:
    """One enrolled host with a pending delivery of a SCEP profile and its current code."""

    def __init__(self, db, ca_name: str, ca_id: int):
        self.host = f"HOST-{uuid.uuid4().hex[:12].upper()}"
        self.profile = str(uuid.uuid4())
        self.ca_name = ca_name
        self.command = str(uuid.uuid4()).upper()
        self.code = secrets.token_urlsafe(24)
        with db.transaction() as conn:
            conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (self.host,))
            conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                         "VALUES (%s, 'p', %s, 'u', '', '')",
                         (self.profile, f"com.test.{self.profile}"))
            conn.execute("INSERT INTO profile_certificate_authorities VALUES (%s, %s)",
                         (self.profile, ca_id))
            conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, "
                         "command_uuid) VALUES (%s, %s, 'com.p', %s)",
                         (self.host, self.profile, self.command))
            copy_owned_rows_to_processor(conn)
            conn.execute("INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, "
                         "command_uuid, expires_at) VALUES (%s, %s, %s, %s, %s, "
                         "now() + interval '1 hour')",
                         (code_sha256(self.code), self.host, self.profile, ca_name, self.command))

    def path(self, code: str | None = None, host: str | None = None) -> str:
        raw = f"{host or self.host},{self.profile},{self.ca_name},{code or self.code}"
        return "/mdm/scep/proxy/" + quote(raw, safe="")

    def code_used(self, db) -> bool:
        with db.transaction() as conn:
            return conn.execute("SELECT used_at FROM scep_codes WHERE code_sha256 = %s",
                                (code_sha256(self.code),)).fetchone()["used_at"] is not None


class RealWorld:
    """The real authority and the proxy with the fleet-wide limit, in front of one CA whose
    max_concurrent_requests is 1."""

    def __init__(self, database_url: str, ca_url: str):
        self.db = Database(database_url, max_size=8, name="tests-starvation").open()
        self.ca_name = f"Starved_{uuid.uuid4().hex[:8]}"
        with self.db.transaction() as conn:
            self.ca_id = conn.execute(
                "INSERT INTO certificate_authorities (name, url, challenge_encrypted, "
                "max_concurrent_requests) VALUES (%s, %s, '\\x00', 1) RETURNING id",
                (self.ca_name, ca_url)).fetchone()["id"]
            copy_owned_rows_to_processor(conn)
        self.deliveries: list[Delivery] = []
        self.authority = GrpcServer(0, ["mdmscep.v1.ProfileAuthority"], HealthChecks({}),
                                    tls=service_tls(PROFILE_PROCESSOR), max_workers=16)
        self.authority.add(profile_authority_pb2_grpc.add_ProfileAuthorityServicer_to_server,
                           ProfileAuthorityServicer(ScepAuthority(self.db)))
        self.authority.start()
        self.settings = load_settings({
            "SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY, "DATABASE_URL": database_url,
            "PROCESSOR_GRPC_ADDR": f"127.0.0.1:{self.authority.port}",
            "SCEP_PROXY_QUEUE_TIMEOUT": QUEUE_TIMEOUT, "SCEP_UPSTREAM_TIMEOUT": "10",
            "SCEP_PROXY_CACHE_TTL": "0", **tls_env("scep-proxy")})
        self.limiter = FleetCaLimiter(database_url, self.settings.scep_proxy_ca_concurrency,
                                      self.settings.scep_proxy_queue_timeout, 32)
        self.outcomes = OutcomeStore(self.db, Outbox(SCEP_PROXY_OUTBOX))
        self.parts = build_proxy(self.settings, self.outcomes, limiter=self.limiter,
                                 client_limiter=SharedClientRefusalLimiter(self.db))
        self.parts.closers.append(self.limiter.close)
        self.app = create_app(self.parts.proxy, HealthChecks({}))
        self.other_parts: list = []
        self.answers: list[tuple[str, str, int]] = []  # (client address, path, status)
        self._server = make_server("127.0.0.1", 0, self._recording, threaded=True,
                                   request_handler=QuietHandler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self.stats_service = CertificateAuthorityService(
            self.db, CertificateAuthorityStore(), ActivityStore(), None, None, None,
            ProfileStore(), ca_requests=ca_requests(self.db),
            deliveries=delivery_directory(self.db))

    def _recording(self, environ, start_response):
        def capture(status, headers, exc_info=None):
            self.answers.append((environ.get("REMOTE_ADDR", ""), environ.get("PATH_INFO", ""),
                                 int(status[:3])))
            return start_response(status, headers, exc_info)
        return self.app(environ, capture)

    def delivery(self) -> Delivery:
        delivery = Delivery(self.db, self.ca_name, self.ca_id)
        self.deliveries.append(delivery)
        return delivery

    def another_worker(self):
        """A second proxy process of the fleet: its own caches and limits, the same database."""
        parts = build_proxy(self.settings, self.outcomes,
                            limiter=FleetCaLimiter(self.settings.database_url, 4, 0.3, 4),
                            client_limiter=SharedClientRefusalLimiter(self.db))
        self.other_parts.append(parts)
        return create_app(parts.proxy, HealthChecks({})).test_client()

    def stats(self) -> dict:
        self.outcomes.flush()  # written off the request path
        return self.stats_service.stats(self.ca_id)

    def metric(self, name: str, **labels: str) -> float:
        text = self.app.test_client().get("/metrics").get_data(as_text=True)
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.parts.close()
        for parts in self.other_parts:
            parts.close()
        self.outcomes.close()
        self.authority.stop(grace=0)
        with self.db.transaction() as conn:
            for d in self.deliveries:
                conn.execute("DELETE FROM scep_codes WHERE host_uuid = %s", (d.host,))
                conn.execute("DELETE FROM host_profiles WHERE host_uuid = %s", (d.host,))
                conn.execute("DELETE FROM profiles WHERE uuid = %s", (d.profile,))
                conn.execute("DELETE FROM hosts WHERE uuid = %s", (d.host,))
            conn.execute("DELETE FROM certificate_authorities WHERE id = %s", (self.ca_id,))
            copy_owned_rows_to_processor(conn)
            conn.execute("DELETE FROM ca_requests WHERE ca_name = %s", (self.ca_name,))
            conn.execute("DELETE FROM scep_proxy_outbox WHERE body->>'ca_name' = %s",
                         (self.ca_name,))
            conn.execute(f"DELETE FROM {REFUSALS_TABLE}")  # the loopback forgers' counts
        self.db.close()


@pytest.fixture
def world(database_url, custom_ca):
    world = RealWorld(database_url, custom_ca.url)
    yield world
    world.close()


class Flood:
    """Forged PKIOperations from FORGER_ADDRESSES until stopped, MAX_FORGED are sent or
    FLOOD_SECONDS pass: a wrong code for the real host's id, and made-up host ids."""

    def __init__(self, world: RealWorld, victim: Delivery):
        self.statuses: list[int] = []
        self.retry_afters: list[str] = []
        self._world, self._victim = world, victim
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._deadline = time.monotonic() + FLOOD_SECONDS
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(FORGER_THREADS)]

    def start(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def _take_turn(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._sent >= MAX_FORGED or time.monotonic() > self._deadline:
                return None
            self._sent += 1
            return self._sent

    def _run(self, index: int) -> None:
        address = FORGER_ADDRESSES[index % len(FORGER_ADDRESSES)]
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address),
                          timeout=10) as client:
            while (turn := self._take_turn()) is not None:
                host = self._victim.host if turn % 2 else f"FORGED-{turn:06d}"
                path = self._victim.path(code=secrets.token_urlsafe(24), host=host)
                response = client.post(f"{self._world.base}{path}?operation=PKIOperation",
                                       content=PKCS_REQ)
                with self._lock:
                    self.statuses.append(response.status_code)
                    if response.status_code == 429:
                        self.retry_afters.append(response.headers.get("Retry-After", ""))

    def answered(self) -> int:
        with self._lock:
            return len(self.statuses)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def test_forged_requests_hold_no_slot_and_do_not_starve_a_real_host(world, tmp_path):
    victim = world.delivery()
    started = time.monotonic()
    flood = Flood(world, victim).start()
    slot_samples: list[int] = []
    try:
        # The flood alone: not one CA slot is ever held, though hundreds of PKIOperations arrive.
        while flood.answered() < 150 and time.monotonic() - started < FLOOD_SECONDS:
            slot_samples.append(world.stats()["in_flight"])
        # A real host, meanwhile, through the same proxy.
        result = scepclient(world.base + victim.path(), tmp_path / "device", CHALLENGE,
                            cn="starved-host")
        during = flood.answered()
    finally:
        flood.stop()
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "device" / "cert.pem").read_bytes())
    assert "starved-host" in cert.subject.rfc4514_string()
    assert victim.code_used(world.db)
    real = [status for _, path, status in world.answers if victim.code in path]
    assert len(real) >= 3 and set(real) == {200}, real  # GetCACert, GetCACaps, PKIOperation

    assert during >= 150 and len(flood.statuses) >= 200
    assert slot_samples and set(slot_samples) == {0}, slot_samples
    assert 503 not in flood.statuses
    assert set(flood.statuses) <= {403, 404, 429}, set(flood.statuses)
    # Refused ones spend their address's bucket; then 429 with Retry-After, without asking.
    assert flood.retry_afters and all(value.isdigit() and int(value) >= 1
                                      for value in flood.retry_afters)
    refused = sum(1 for status in flood.statuses if status in (403, 404))
    # Per address: its burst, what refilled meanwhile, and the requests already past the check
    # when the burst ran out (one per thread sending from that address).
    in_flight_per_address = FORGER_THREADS / len(FORGER_ADDRESSES)
    allowance = len(FORGER_ADDRESSES) * (REFUSAL_BURST + REFUSALS_REFILL_PER_SECOND * elapsed
                                         + in_flight_per_address)
    assert refused <= allowance, (refused, allowance)

    # The CA's statistics and the proxy's metrics know of one request: the real host's.
    stats = wait_for(lambda: (s := world.stats())["issued"] == 1 and s, 10, "the issued row")
    assert stats["refused_busy"] == 0 and stats["failed"] == 0 and stats["in_flight"] == 0
    assert world.metric("scep_proxy_requests_total", status="503") == 0
    assert world.metric("scep_proxy_requests_total", operation="PKIOperation",
                        status="200") == 1


def test_a_request_refused_busy_keeps_its_code_and_its_retry_succeeds(world, database_url,
                                                                      tmp_path):
    host = world.delivery()
    # Another replica holds the CA's only slot: one advisory lock, as FleetCaLimiter takes it.
    holder = psycopg.connect(database_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (slot_lock_class(world.ca_name),))
        started = time.monotonic()
        busy = httpx.post(f"{world.base}{host.path()}?operation=PKIOperation", content=PKCS_REQ,
                          timeout=10)
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["Retry-After"]) >= 1
        assert time.monotonic() - started >= float(QUEUE_TIMEOUT)
        assert not host.code_used(world.db)  # authorized, then given back
        assert eventually(lambda: world.stats()["refused_busy"] == 1)
    finally:
        holder.close()  # the slot is free again
    result = scepclient(world.base + host.path(), tmp_path / "device", CHALLENGE, cn="patient")
    assert result.returncode == 0, result.stderr
    assert host.code_used(world.db)
    assert wait_for(lambda: world.stats()["issued"] == 1, 10, "the issued row")


def test_an_admins_change_of_the_limit_applies_at_the_next_authorization(world, database_url,
                                                                         tmp_path):
    """The limit comes with each AuthorizeScep answer (the proxy reads no admin-config table):
    raised, the very next request takes the new slot; lowered, the next one waits again."""
    def set_limit(limit: int) -> None:
        # As the admin API's PATCH writes and announces it, and the processor takes the event.
        events = RecordingPublisher()
        with world.db.transaction() as conn:
            announce_ca(events, conn, "edited",
                        CertificateAuthorityStore().set_limits(conn, world.ca_id, limit, None),
                        resend=False)
            assert apply_recorded_events(conn, events) == 1

    def busy(delivery: Delivery) -> bool:
        answer = httpx.post(f"{world.base}{delivery.path()}?operation=PKIOperation",
                            content=PKCS_REQ, timeout=10)
        return answer.status_code == 503 and not delivery.code_used(world.db)

    first, second = world.delivery(), world.delivery()
    holder = psycopg.connect(database_url, autocommit=True)  # another replica's request
    try:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (slot_lock_class(world.ca_name),))
        assert busy(first)  # max_concurrent_requests 1: that slot is the only one
        set_limit(2)
        result = scepclient(world.base + first.path(), tmp_path / "device", CHALLENGE,
                            cn="raised-limit")
        assert result.returncode == 0, result.stderr
        assert first.code_used(world.db)
        set_limit(1)
        assert busy(second)
    finally:
        holder.close()


def test_only_a_recently_used_code_of_a_pending_delivery_is_given_back(world):
    authority = ScepAuthority(world.db)
    first, second = world.delivery(), world.delivery()

    def give_back(delivery: Delivery, code: str | None = None, host: str | None = None) -> bool:
        return authority.give_back(host or delivery.host, delivery.profile, world.ca_name,
                                   code or delivery.code)

    assert not give_back(first)  # never used
    assert authority.authorize(first.host, first.profile, world.ca_name, first.code,
                               "PKIOperation").allowed
    assert not give_back(first, host=second.host)  # another host's
    assert not give_back(first, code="not-the-code")
    assert give_back(first)
    again = authority.authorize(first.host, first.profile, world.ca_name, first.code,
                                "PKIOperation")
    assert again.allowed  # usable once more, and used up again
    assert not authority.authorize(first.host, first.profile, world.ca_name, first.code,
                                   "PKIOperation").allowed

    with world.db.transaction() as conn:  # used long ago: it went to the CA
        conn.execute("UPDATE scep_codes SET used_at = now() - make_interval(secs => %s) "
                     "WHERE code_sha256 = %s", (GIVE_BACK_WINDOW_SECONDS + 5,
                                                code_sha256(first.code)))
    assert not give_back(first)

    assert authority.authorize(second.host, second.profile, world.ca_name, second.code,
                               "PKIOperation").allowed
    with world.db.transaction() as conn:  # the delivery moved on
        conn.execute("UPDATE host_profiles SET status = 'verifying' WHERE host_uuid = %s",
                     (second.host,))
    assert not give_back(second)


def test_refusals_are_counted_for_every_worker(world):
    victim = world.delivery()
    workers = [world.app.test_client(), world.another_worker()]
    forger = {"REMOTE_ADDR": "127.0.0.20"}
    statuses = []
    for turn in range(2 * REFUSAL_BURST):
        response = workers[turn % 2].post(
            victim.path(code=secrets.token_urlsafe(24)) + "?operation=PKIOperation",
            data=PKCS_REQ, environ_base=forger)
        statuses.append(response.status_code)
    # One burst for the whole fleet (and at most one refusal more per process that had not yet
    # heard), not one burst per process.
    assert statuses.count(403) <= REFUSAL_BURST + len(workers), statuses
    assert statuses[-len(workers):] == [429] * len(workers)
    # The real host, from its own address, goes through either worker.
    response = workers[1].get(victim.path(), query_string={"operation": "GetCACaps"},
                              environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
