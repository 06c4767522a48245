"""scep-proxy's ScepGateway.CaRequestStats over mutual-TLS gRPC, as admin-config calls it: the
CA's outcomes over the window from ca_requests, the slots held now by the proxy's real fleet-wide
limiter (advisory locks on its own connections), and the requests refused.

The server reads the test's own transaction (the `db` fixture) for ca_requests, and pg_locks,
which shows every session's locks."""

from __future__ import annotations

import contextlib
import uuid

import grpc
import httpx
import pytest

from mdmscep.v1 import scep_gateway_pb2 as sg
from mdmscep.v1 import scep_gateway_pb2_grpc
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.service_database import service_dsn
from scep_proxy.ca_request_stats import CaRequestStatistics
from scep_proxy.gateway import ScepGatewayServicer
from scep_proxy.limits import FleetCaLimiter
from tests.support.service_certs import service_tls

SUFFIX = uuid.uuid4().hex[:8]
CA, OTHER_CA, BUSY_CA = f"Stats_CA_{SUFFIX}", f"Other_CA_{SUFFIX}", f"Busy_CA_{SUFFIX}"

# (ca, outcome, latency ms, minutes ago)
REQUESTS = [
    (CA, "issued", 100, 1), (CA, "issued", 200, 10), (CA, "scep_failure", 300, 20),
    (CA, "timeout", 400, 59), (CA, "busy", 5, 2), (CA, "busy", 5, 3), (CA, "busy", 5, 30),
    (CA, "issued", 1000, 120),  # two hours ago
    (CA, "upstream_error", 7000, 60 * 30),  # beyond a day
    (OTHER_CA, "issued", 50, 1), (OTHER_CA, "issued", 50, 1),
    (BUSY_CA, "busy", 3, 1),
]


@pytest.fixture
def world(db_conn):
    for ca, outcome, latency, minutes in REQUESTS:
        db_conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms, created_at) "
                        "VALUES (%s, %s, %s, now() - make_interval(mins => %s))",
                        (ca, outcome, latency, minutes))


@pytest.fixture
def server(db):
    client = httpx.Client(timeout=5, follow_redirects=False)
    server = GrpcServer(0, ["mdmscep.v1.ScepGateway"], HealthChecks({}),
                        tls=service_tls("scep-proxy"))
    server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server,
               ScepGatewayServicer(client, probe_timeout=2.0, stats=CaRequestStatistics(db)))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)
    client.close()


@pytest.fixture
def gateway(server):
    """A stub with admin-config's certificate."""
    with service_tls("admin-config").channel(server, "scep-proxy") as channel:
        yield scep_gateway_pb2_grpc.ScepGatewayStub(channel)


def stats(gateway, ca_name, window_seconds=3600):
    return gateway.CaRequestStats(sg.CaRequestStatsRequest(ca_name=ca_name,
                                                           window_seconds=window_seconds),
                                  timeout=10)


def figures(answer) -> tuple:
    latency = answer.average_latency_ms if answer.HasField("average_latency_ms") else None
    return answer.issued, answer.failed, answer.refused_busy, answer.in_flight, latency


def test_the_last_hour_of_a_ca(world, gateway):
    # Failed: the CA's refusal and the timeout; busy answers are no CA answer (nor latency).
    assert figures(stats(gateway, CA)) == (2, 2, 3, 0, 250.0)
    assert figures(stats(gateway, OTHER_CA)) == (2, 0, 0, 0, 50.0)


def test_the_window_decides_what_counts(world, gateway):
    assert figures(stats(gateway, CA, window_seconds=86_400)) == (3, 2, 3, 0, 400.0)
    assert figures(stats(gateway, CA, window_seconds=200)) == (1, 0, 2, 0, 100.0)
    assert figures(stats(gateway, CA, window_seconds=1)) == (0, 0, 0, 0, None)


def test_no_answered_request_leaves_the_latency_unset(world, gateway):
    assert figures(stats(gateway, BUSY_CA)) == (0, 0, 1, 0, None)
    assert figures(stats(gateway, f"Never_Used_{SUFFIX}")) == (0, 0, 0, 0, None)


def test_in_flight_counts_the_slots_the_proxy_holds_now(world, gateway, database_url):
    limiter = FleetCaLimiter(database_url, default_limit=3, queue_timeout=0.5, max_connections=4)
    try:
        with contextlib.ExitStack() as held:
            held.enter_context(limiter.slot(CA, None))
            held.enter_context(limiter.slot(CA, None))
            held.enter_context(limiter.slot(OTHER_CA, None))
            assert stats(gateway, CA).in_flight == 2
            assert stats(gateway, OTHER_CA).in_flight == 1
            assert stats(gateway, BUSY_CA).in_flight == 0
        assert stats(gateway, CA).in_flight == 0  # given back
    finally:
        limiter.close()


@pytest.mark.parametrize("ca_name, window_seconds", [
    ("", 3600), ("not a name", 3600), ("Stats-CA", 3600), ("A" * 256, 3600),
    (CA, 0), (CA, -1), (CA, 86_401),
], ids=["empty-name", "space", "dash", "long-name", "window-0", "negative-window",
        "window-over-a-day"])
def test_bad_requests_are_refused(world, gateway, ca_name, window_seconds):
    with pytest.raises(grpc.RpcError) as refused:
        stats(gateway, ca_name, window_seconds)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_255_character_name_is_a_name(world, gateway):
    assert figures(stats(gateway, "A" * 255)) == (0, 0, 0, 0, None)


@pytest.mark.parametrize("caller", ["profile-processor", "mdm-endpoint", "scep-proxy"])
def test_only_admin_config_may_ask(world, server, caller):
    with service_tls(caller).channel(server, "scep-proxy") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            stats(scep_gateway_pb2_grpc.ScepGatewayStub(channel), CA)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_proxys_own_database_role_sees_every_replicas_slots(database_url):
    """As deployed: connected as scep-proxy's role, reading its ca_requests and the slot locks
    other sessions hold."""
    db = Database(service_dsn(database_url, "scep-proxy"), min_size=0, max_size=1,
                  name="tests-ca-request-stats").open()
    limiter = FleetCaLimiter(database_url, default_limit=3, queue_timeout=0.5, max_connections=2)
    try:
        with limiter.slot(CA, None):
            stats = CaRequestStatistics(db).of_ca(CA, 3600)
        assert (stats.in_flight, stats.average_latency_ms) == (1, None)
    finally:
        limiter.close()
        db.close()
