"""The services' test fixtures, seen by every test folder (tests/conftest.py loads this module as a
plugin): the admin API in-process (`admin`, `live_admin`), mdm-endpoint with its gRPC servers,
push worker and simulated hosts (`mdm`), the processor's replicas (`start_processor`), relays and
consumers, and the clean tables between tests that commit. Session fixtures start only when a
test asks for them."""

from __future__ import annotations

import pytest

from admin_config.app import build_services, create_app
from admin_config.scep_gateway import ScepGatewayClient
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.consuming import consume_in_thread
from tests.support.owner_doubles import ca_requests, delivery_directory, row_owners
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls, tls_env
from tests.support.settings import load_settings


class AdminClient:
    """The admin API through Flask's test client, with the bearer token set."""

    def __init__(self, client, token: str = ADMIN_TOKEN):
        self._client = client
        self.token = token

    def _headers(self, headers):
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, path, headers=None, **kw):
        return self._client.get(path, headers=self._headers(headers), **kw)

    def post(self, path, headers=None, **kw):
        return self._client.post(path, headers=self._headers(headers), **kw)

    def put(self, path, headers=None, **kw):
        return self._client.put(path, headers=self._headers(headers), **kw)

    def patch(self, path, headers=None, **kw):
        return self._client.patch(path, headers=self._headers(headers), **kw)

    def delete(self, path, headers=None, **kw):
        return self._client.delete(path, headers=self._headers(headers), **kw)

    @property
    def raw(self):
        return self._client


@pytest.fixture
def publisher():
    return RecordingPublisher()


@pytest.fixture
def admin_app(db, scep_gateway, publisher, database_url):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "DATABASE_URL": database_url,
                              **tls_env("admin-config")})
    # Hosts, deliveries and CA traffic from the owners' servicers in-process, over the test's rows
    # (tests/support/owner_doubles.py).
    services = build_services(settings, db,
                              ScepGatewayClient(scep_gateway, service_tls("admin-config"), 2.0),
                              publisher, **row_owners(db))
    app = create_app(services, HealthChecks({}))
    app.testing = True
    return app


@pytest.fixture
def admin(admin_app):
    return AdminClient(admin_app.test_client())


def create_ca(admin, name, url, challenge="ch4llenge!"):
    return admin.post("/api/v1/fleet/certificate_authorities",
                      json={"custom_scep_proxy": {"name": name, "url": url,
                                                  "challenge": challenge}})


# --- MDM side ------------------------------------------------------------------------------

ENROLL_SECRET = "enroll-secret-for-tests"


@pytest.fixture(scope="session")
def identity_ca(tmp_path_factory):
    from tests.support.scepserver import start_scepserver

    server = start_scepserver(challenge="identity-challenge", organization="mdmscep identity CA",
                              workdir=tmp_path_factory.mktemp("identity-ca"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def apns_pki(tmp_path_factory):
    from hostsim.pki import make_apns_pki

    return make_apns_pki(tmp_path_factory.mktemp("apns"))


@pytest.fixture(scope="session")
def push_router():
    from tests.support.mdm import PushRouter

    return PushRouter()


@pytest.fixture(scope="session")
def fake_apns(apns_pki, push_router):
    from hostsim.fake_apns import FakeApns

    apns = FakeApns(str(apns_pki.server_cert), str(apns_pki.server_key), str(apns_pki.push_ca),
                    on_push=push_router).start()
    yield apns
    apns.stop()


@pytest.fixture(scope="session")
def mdm_settings(database_url, amqp_url, identity_ca, apns_pki, fake_apns):
    from tests.support.ports import free_port

    mdm_port = free_port()
    return load_settings({
        "SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY, "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url, "ENROLL_SECRET": ENROLL_SECRET,
        "MDM_HTTP_PORT": str(mdm_port), "MDM_PUBLIC_URL": f"http://127.0.0.1:{mdm_port}",
        "MDM_GRPC_PORT": str(free_port()),
        "IDENTITY_SCEP_URL": identity_ca.url, "IDENTITY_SCEP_CHALLENGE": "identity-challenge",
        "MDM_IDENTITY_CA_CERTS": str(identity_ca.depot / "ca.pem"),
        "APNS_URL": fake_apns.url, "APNS_CERT": str(apns_pki.push_cert),
        "APNS_KEY": str(apns_pki.push_key), "APNS_CA_CERTS": str(apns_pki.server_ca),
    })


@pytest.fixture(scope="session")
def mdm_db(mdm_settings):
    from mdmscep_common.db import Database

    db = Database(mdm_settings.database_url, max_size=8, name="tests-mdm").open()
    yield db
    db.close()


@pytest.fixture(scope="session")
def mdm_relay(mdm_settings, mdm_db):
    """mdm-endpoint's outbox relay (as `mdm-endpoint grpc` runs it): the events of the MDM
    endpoint and the Commander below reach the bus through it."""
    from mdm_endpoint.main import outbox_relay

    relay = outbox_relay(mdm_settings, mdm_db).start()
    yield relay
    relay.stop()


@pytest.fixture(scope="session")
def mdm_server(mdm_settings, mdm_db, mdm_relay):
    """mdm-endpoint's HTTP app on a real port (hosts use httpx against it)."""
    from mdm_endpoint.app import create_app
    from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox
    from tests.support.mdm import ServerThread

    app = create_app(mdm_settings, mdm_db, Outbox(MDM_ENDPOINT_OUTBOX), HealthChecks({}))
    server = ServerThread(app, mdm_settings.mdm_http_port).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def commander(mdm_settings, mdm_db, mdm_relay):
    """mdm-endpoint's gRPC server (Commander, HostRegistry) with its certificate; yields its
    address."""
    from mdm_endpoint.commander import Commander, CommanderServicer
    from mdm_endpoint.host_registry import HostRegistry, HostRegistryServicer
    from mdm_endpoint.store import CommandStore
    from mdmscep.v1 import commander_pb2_grpc, host_registry_pb2_grpc
    from mdmscep_common.grpc_server import GrpcServer
    from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox

    server = GrpcServer(mdm_settings.mdm_grpc_port, ["mdmscep.v1.Commander"], HealthChecks({}),
                        tls=service_tls("mdm-endpoint"))
    events = Outbox(MDM_ENDPOINT_OUTBOX)
    server.add(commander_pb2_grpc.add_CommanderServicer_to_server,
               CommanderServicer(Commander.for_settings(mdm_settings, mdm_db, CommandStore(),
                                                        events)))
    server.add(host_registry_pb2_grpc.add_HostRegistryServicer_to_server,
               HostRegistryServicer(HostRegistry(mdm_db, events)))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.fixture(scope="session")
def push_worker(mdm_settings, mdm_db):
    import threading

    from mdm_endpoint.main import push_worker as make_push_worker

    worker, apns = make_push_worker(mdm_settings, mdm_db)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.ready.wait(10)
    yield worker
    worker.stop()
    thread.join(10)
    apns.close()


@pytest.fixture
def clean_hosts(mdm_db, amqp_url):
    _reset(mdm_db, amqp_url)
    yield
    _reset(mdm_db, amqp_url)


@pytest.fixture
def mdm(mdm_server, commander, push_worker, fake_apns, push_router, clean_hosts, tmp_path):
    """Everything a simulated host needs; pushes wake the hosts of `mdm.fleet`."""
    from hostsim.fleet import Fleet

    fleet = Fleet(mdm_server.url, 0, tmp_path, workers=8)
    push_router.target = fleet.on_push
    fake_apns.pushes.clear()
    fake_apns.refusals.clear()
    yield MdmHarness(mdm_server.url, commander, fake_apns, fleet, tmp_path)
    push_router.target = None
    fleet.close()


class MdmHarness:
    def __init__(self, url, commander_addr, apns, fleet, workdir):
        self.url = url
        self.commander_addr = commander_addr
        self.apns = apns
        self.fleet = fleet
        self.workdir = workdir

    def new_host(self, enroll: bool = True, **kw):
        from hostsim.device import SimulatedHost
        from tests.support.waiting import eventually

        host = SimulatedHost(self.url, workdir=self.workdir, client=self.fleet.client, **kw)
        self.fleet.add_host(host)
        if enroll:
            host.enroll(ENROLL_SECRET)
            # Enrolled, it is asked its facts and pushed: the test starts once it has answered
            # (its queue empty, no connection of its own still under way). Without pushes
            # (tests/support/polled_mdm.py) it checks in once on its own.
            if self.apns is None:
                host.poll()
            assert eventually(lambda: any(kind == "DeviceInformation"
                                          for kind, *_ in host.handled))
            with host.lock:
                pass
        return host

    def enqueue(self, commands):
        """commands: (host_uuid, command_uuid, request_type, payload[, replaces]), queued as the
        profile-processor (the Commander's only caller)."""
        from mdmscep.v1 import commander_pb2, commander_pb2_grpc

        with service_tls("profile-processor").channel(self.commander_addr,
                                                      "mdm-endpoint") as channel:
            return commander_pb2_grpc.CommanderStub(channel).Enqueue(commander_pb2.EnqueueRequest(
                commands=[commander_pb2.HostCommand(host_uuid=c[0], command_uuid=c[1],
                                                    request_type=c[2], payload=c[3],
                                                    replaces_command_uuid=c[4] if len(c) > 4 else "")
                          for c in commands]), timeout=10)


# --- profile delivery (admin + processor over committed data) --------------------------------

def _reset(db, amqp_url):
    """Empty tables, and no event of an earlier test left for the processor: its read models
    would take the CAs and profiles of that test back."""
    from mdmscep_common import bus, work_queues

    _truncate_all(db)
    queue = work_queues.profile_processor_events()
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
        with conn.channel() as channel:
            queue(channel).purge()


# Every table a test may commit rows to, children before their parents. DELETE, not TRUNCATE:
# on a few rows it takes 4 ms where TRUNCATE takes 80 (new files for every table), twice a test.
_COMMITTED_TABLES = (
    "profile_labels", "label_hosts", "host_teams", "profile_certificate_authorities",
    "known_profile_labels", "known_profile_certificate_authorities", "label_memberships",
    "commands", "host_profiles", "scep_codes", "host_certificates", "ca_pacing", "ca_requests",
    "activities", "api_tokens", "read_model_sequences", "profiles", "labels", "teams",
    "certificate_authorities", "hosts", "known_profiles", "known_certificate_authorities",
    "known_labels", "known_host_teams", "known_host_facts", "enrolled_hosts",
    "admin_config_outbox", "mdm_endpoint_outbox", "profile_processor_outbox", "scep_proxy_outbox")


def _truncate_all(db):
    with db.transaction() as conn:
        for table in _COMMITTED_TABLES:
            conn.execute(f"DELETE FROM {table}")


@pytest.fixture
def clean_state(clean_hosts):
    """Tests that commit start and end with empty tables (others roll back their own): those of
    clean_hosts, emptied once for a test that asks for both."""


@pytest.fixture
def live_admin_app(mdm_db, scep_gateway, amqp_url, database_url, commander, clean_state):
    """The admin API over the real connection pool and bus, so other components see its commits
    and its events (relayed from its outbox, as `admin-config worker` does)."""
    from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, Outbox, OutboxRelay

    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "DATABASE_URL": database_url,
                              "MDM_GRPC_ADDR": commander, **tls_env("admin-config")})
    relay = OutboxRelay(mdm_db, ADMIN_CONFIG_OUTBOX, amqp_url, database_url).start()
    # Hosts through mdm-endpoint's real HostRegistry (`commander`); deliveries and CA traffic from
    # the processor's and the proxy's servicers in-process (tests/support/owner_doubles.py).
    services = build_services(settings, mdm_db,
                              ScepGatewayClient(scep_gateway, service_tls("admin-config"), 2.0),
                              Outbox(ADMIN_CONFIG_OUTBOX), deliveries=delivery_directory(mdm_db),
                              ca_requests=ca_requests(mdm_db))
    yield create_app(services, HealthChecks({}))
    relay.stop()


@pytest.fixture
def live_admin(live_admin_app):
    return AdminClient(live_admin_app.test_client())


@pytest.fixture
def cli(live_admin_app, capsys):
    """The `mdmscep` CLI against the live admin API on a real port: cli(*args) → (exit code or
    the message it exited with, what it printed)."""
    import io
    import sys

    from admin_config.cli import main
    from tests.support.mdm import ServerThread
    from tests.support.ports import free_port

    server = ServerThread(live_admin_app, free_port()).start()

    def run(*args, stdin: str = "", token: str = ADMIN_TOKEN):
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            main(["--server", server.url, "--token", token, *args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdin = old
        out = capsys.readouterr()
        return code, out.out + (out.err if isinstance(code, int) else str(code))
    yield run
    server.stop()


PROXY_PUBLIC_URL = "http://scep-proxy.test:8082"


class ProcessorReplica:
    def __init__(self, authority, reconciler):
        self.authority = authority
        self.reconciler = reconciler


@pytest.fixture(scope="session")
def processor_relay(mdm_settings, mdm_db):
    """profile-processor's outbox relay (as the `profile-processor` process runs it)."""
    from profile_processor.main import outbox_relay

    relay = outbox_relay(mdm_settings, mdm_db).start()
    yield relay
    relay.stop()


@pytest.fixture
def admin_events(mdm_db, amqp_url):
    """admin-config's consumer of admin_config.events (as `admin-config worker` runs it), over
    committed data; what earlier tests left in the queue is purged first."""
    from admin_config.background_duties import admin_config_events_handler
    from mdmscep_common import bus, work_queues

    queue = work_queues.admin_config_events()
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
        with conn.channel() as channel:
            queue(channel).purge()
    worker = bus.Worker(amqp_url, {queue.name: (queue, admin_config_events_handler(mdm_db, 30))},
                        prefetch=4, requeue_pause=0.05)
    thread = consume_in_thread(worker)
    yield worker
    worker.stop()
    thread.join(10)


@pytest.fixture
def start_processor(mdm_settings, mdm_db, commander, processor_relay):
    """Start processor replicas in this process: reconcile loop + event consumer each (their
    events relayed by `processor_relay`)."""
    import threading

    from profile_processor.main import build

    running = []

    def start(**env):
        settings = load_settings({
            "SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY, "DATABASE_URL": mdm_settings.database_url,
            "AMQP_URL": mdm_settings.amqp_url, "MDM_GRPC_ADDR": commander,
            "SCEP_PROXY_PUBLIC_URL": PROXY_PUBLIC_URL, "PROFILE_RECONCILE_INTERVAL": "0.25",
            "PROFILE_RETRY_BACKOFF": "0.1", **tls_env("profile-processor"), **env})
        loop, worker, authority, client = build(settings, mdm_db)
        reconciling = threading.Thread(target=loop.run, daemon=True)
        reconciling.start()
        running.append((loop, worker, client, [reconciling, consume_in_thread(worker)]))
        return ProcessorReplica(authority, loop.reconciler)

    yield start
    # Every replica is told to stop before any is waited for.
    for loop, worker, _, _ in running:
        worker.stop()
        loop.stop()
    for _, _, client, threads in running:
        for thread in threads:
            thread.join(10)
        client.close()
