"""Test fixtures: a real PostgreSQL database and RabbitMQ vhost per test run (warehouse/nameko
style), a transaction rolled back per test, real scepservers, the internal gRPC service PKI, and
the gRPC ScepGateway."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg.rows import dict_row

from mdmscep_common import outbox
from mdmscep_common.db import SingleConnectionDatabase, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from tests.support.scepserver import start_scepserver
from tests.support.service_certs import service_pki_dir, service_tls, tls_env

# The services' fixtures (admin API, mdm-endpoint, processor replicas), for every test folder.
pytest_plugins = ["tests.support.service_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:10]
PG_BASE = os.environ.get("TEST_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
SERVER_PRIVATE_KEY = "test-server-private-key-0123456789abcdef"
# One token for every pytest-xdist worker of a run: test ids carry it, and workers must collect
# the same tests (RUN_ID, which names databases and vhosts, is per worker).
ADMIN_TOKEN = "test-admin-token-" + (os.environ.get("PYTEST_XDIST_TESTRUNUID") or RUN_ID)[:10]

# Properties are checked, not speed: Hypothesis' per-example deadline (200 ms) only measures how
# busy the machine is when `make test` runs the suite on several workers.
hypothesis_settings.register_profile("mdmscep", deadline=None)
hypothesis_settings.load_profile("mdmscep")

# An outbox relay waiting for a notification looks at its stop flag every 0.5 s; most
# integration tests stop relays they started in this process, and each stop waited up to that.
# The processes tests start keep the service's own value.
outbox.STOP_CHECK_SECONDS = 0.1


def _describe_lambdas_despite_cpython_gh_106905() -> None:
    """CPython 3.11.7 tracks the AST converter's recursion depth in interpreter-wide state and
    misses it on error paths (gh-106905, fixed in 3.11.8): in a process with several threads an
    ast.parse can now and then fail with "SystemError: AST constructor recursion depth mismatch".
    Hypothesis parses lambdas only to name strategies; a CI run once failed on that race with a
    FlakyFailure that says nothing about the product. Parse again, then fall back to a plain
    name."""
    from hypothesis.internal import lambda_sources

    describe = lambda_sources._lambda_description

    def described(f, *args, **kwargs):
        for _ in range(3):
            try:
                return describe(f, *args, **kwargs)
            except SystemError:
                continue
        return "lambda: <unknown>"

    lambda_sources._lambda_description = described


_describe_lambdas_despite_cpython_gh_106905()


def report_past_capture(config: pytest.Config, text: str) -> None:
    """Show `text` in the terminal of the run despite output capture (figures a test measured).
    A pytest-xdist worker has no terminal of its own: its texts go to the controller, which
    prints them in the summary (pytest_testnodedown, pytest_terminal_summary below)."""
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput.setdefault("mdmscep_reports", []).append(text)
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        for line in text.splitlines():
            reporter.write_line(line)


# Seconds each test took (setup, call and teardown) in the last run that ran it, in pytest's
# cache (.pytest_cache): what orders the modules of the next run.
TEST_SECONDS_KEY = "mdmscep/test_seconds"
# Where a test has not run here yet: the fault tests take by far the longest, then the other
# tests that start stacks (marked slow).
UNMEASURED_SECONDS = {"faults": 60.0, "slow": 20.0, "other": 0.1}


def _expected_seconds(item, measured: dict[str, float]) -> float:
    if item.nodeid in measured:
        return measured[item.nodeid]
    if item.nodeid.startswith("tests/faults/"):
        return UNMEASURED_SECONDS["faults"]
    return UNMEASURED_SECONDS["slow" if item.get_closest_marker("slow") else "other"]


def pytest_collection_modifyitems(config, items):
    """`make test` runs pytest-xdist with --dist loadfile (a module's tests share a worker, so a
    module's world is built once) and --no-loadscope-reorder: workers are handed modules in
    collection order, each taking the next when it is done. The longest go first, so the run
    ends with short modules rather than one worker waiting on a long one: modules are ordered by
    what their collected tests took last time, else by UNMEASURED_SECONDS. A module keeps its
    own order of tests."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = getattr(config, "cache", None)
        measured = cache.get(TEST_SECONDS_KEY, {}) if cache is not None else {}
        module_seconds: dict[str, float] = {}
        for item in items:
            module = item.nodeid.split("::")[0]
            module_seconds[module] = module_seconds.get(module, 0.0) + \
                _expected_seconds(item, measured)
        items.sort(key=lambda item: -module_seconds[item.nodeid.split("::")[0]])


_TEST_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """In the run's main process (a pytest-xdist worker reports there too): each test's time."""
    _TEST_SECONDS[report.nodeid] = _TEST_SECONDS.get(report.nodeid, 0.0) + report.duration


_WORKER_REPORTS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _WORKER_REPORTS.extend(getattr(node, "workeroutput", {}).get("mdmscep_reports", []))


def pytest_sessionfinish(session):
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _TEST_SECONDS:
        return
    measured = cache.get(TEST_SECONDS_KEY, {})
    measured.update({nodeid: round(seconds, 2) for nodeid, seconds in _TEST_SECONDS.items()})
    cache.set(TEST_SECONDS_KEY, measured)


def pytest_terminal_summary(terminalreporter):
    if _WORKER_REPORTS:
        terminalreporter.section("figures reported by tests")
        for text in _WORKER_REPORTS:
            for line in text.splitlines():
                terminalreporter.write_line(line)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def database_url():
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}"
    ensure_database(url)
    apply_migrations(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def amqp_url():
    vhost = f"mdmscep_test_{RUN_ID}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"{AMQP_BASE}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def service_pki():
    """The internal gRPC service CA and a certificate per service, once per session
    (tests/support/service_certs.py); its directory."""
    return service_pki_dir()


@pytest.fixture(scope="session")
def base_env(database_url, amqp_url, service_pki):
    """Environment for stack processes started by tests. The processes tests start on their own
    are scep-proxy replicas asking the fake ProfileAuthority, so it carries scep-proxy's gRPC
    certificate; start_stack drops it (the launcher issues every program its own)."""
    return {
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
        "ADMIN_API_TOKEN": ADMIN_TOKEN,
        **tls_env("scep-proxy", service_pki),
    }


@pytest.fixture
def db_conn(database_url):
    """One connection inside a transaction that is rolled back after the test."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        with conn.transaction(force_rollback=True):
            yield conn


@pytest.fixture
def db(db_conn):
    return SingleConnectionDatabase(db_conn)


@pytest.fixture(scope="session")
def custom_ca(tmp_path_factory):
    server = start_scepserver(challenge="custom-ca-challenge",
                              workdir=tmp_path_factory.mktemp("custom-ca"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scep_gateway(service_pki):
    """scep-proxy's gRPC ScepGateway in-process, with a short probe timeout; yields its address
    (callers use admin-config's certificate: service_certs.service_tls)."""
    from mdmscep.v1 import scep_gateway_pb2_grpc
    from mdmscep_common.grpc_server import GrpcServer
    from mdmscep_common.health import HealthChecks
    from scep_proxy.gateway import ScepGatewayServicer

    client = httpx.Client(timeout=5, follow_redirects=False)
    server = GrpcServer(0, ["mdmscep.v1.ScepGateway"], HealthChecks({}),
                        tls=service_tls("scep-proxy", service_pki))
    server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server,
               ScepGatewayServicer(client, probe_timeout=2.0))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)
    client.close()
