"""mdm-endpoint's HostRegistry.ListHosts and GetHosts over mutual-TLS gRPC, as admin-config calls
them: enrollment order, paging and total, the query (part of the serial number or UUID, any case,
taken literally) and the host filter, the fields of a host, and the requests refused.

The server reads the test's own transaction (the `db` fixture): the hosts below are the only
ones it sees."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from mdm_endpoint.host_registry import HostRegistry, HostRegistryServicer
from mdm_endpoint.store import HostStore
from mdmscep.v1 import host_registry_pb2 as hr
from mdmscep.v1 import host_registry_pb2_grpc
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.service_database import service_dsn
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls

# (uuid, serial, minutes after t0 first seen); UDID-A and UDID-B were first seen together.
HOSTS = [("UDID-B", "SERIAL-ONE", 0), ("UDID-A", "serial-two", 0), ("UDID-C", "XQ-Three", 1),
         ("UDID-D", "xq-four", 2)]
ORDER = ["UDID-A", "UDID-B", "UDID-C", "UDID-D"]


@pytest.fixture
def world(db_conn):
    """The four hosts; UDID-C enrolled (TokenUpdate) and its token refused by APNs, UDID-D
    never seen. Returns t0."""
    db_conn.execute("DELETE FROM hosts")  # commands go with them
    t0 = db_conn.execute("SELECT now() - interval '1 day' AS t0").fetchone()["t0"]
    for udid, serial, minutes in HOSTS:
        db_conn.execute(
            "INSERT INTO hosts (uuid, serial_number, device_name, model, os_version, created_at, "
            "last_seen_at) VALUES (%s, %s, %s, 'Mac14,2', '14.5', %s, %s)",
            (udid, serial, f"{udid} laptop", t0 + timedelta(minutes=minutes),
             None if udid == "UDID-D" else t0 + timedelta(hours=1, minutes=minutes)))
    hosts = HostStore()
    assert hosts.token_update(db_conn, "UDID-C", "com.apple.mgmt.test", b"token", "magic")
    hosts.mark_token_invalid(db_conn, ["UDID-C"])
    return t0


@pytest.fixture
def server(db):
    server = GrpcServer(0, ["mdmscep.v1.HostRegistry"], HealthChecks({}),
                        tls=service_tls("mdm-endpoint"))
    server.add(host_registry_pb2_grpc.add_HostRegistryServicer_to_server,
               HostRegistryServicer(HostRegistry(db, RecordingPublisher())))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.fixture
def registry(server):
    """A stub with admin-config's certificate."""
    with service_tls("admin-config").channel(server, "mdm-endpoint") as channel:
        yield host_registry_pb2_grpc.HostRegistryStub(channel)


def listed(registry, per_page=100, page=0, **kw) -> tuple[list[str], int]:
    answer = registry.ListHosts(hr.ListHostsRequest(page=page, per_page=per_page, **kw), timeout=10)
    return [h.uuid for h in answer.hosts], answer.total


def invalid(call, request) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_hosts_come_in_enrollment_order_page_by_page(world, registry):
    assert listed(registry) == (ORDER, 4)
    assert listed(registry, per_page=3) == (ORDER[:3], 4)
    assert listed(registry, per_page=3, page=1) == (ORDER[3:], 4)
    assert listed(registry, per_page=1, page=2) == (["UDID-C"], 4)
    assert listed(registry, per_page=3, page=5) == ([], 4)
    assert listed(registry, per_page=1000) == (ORDER, 4)


@pytest.mark.parametrize("query, expected", [
    ("serial", ["UDID-A", "UDID-B"]),  # any case
    ("SERIAL-T", ["UDID-A"]),
    ("udid-c", ["UDID-C"]),  # part of the UUID
    ("Xq", ["UDID-C", "UDID-D"]),
    ("%", []),  # taken literally: no LIKE wildcards
    ("S_RIAL", []),
    ("a" * 100, []),
    ("", ORDER),
])
def test_the_query_is_a_literal_part_of_the_serial_or_uuid_in_any_case(world, registry, query,
                                                                       expected):
    assert listed(registry, query=query) == (expected, len(expected))


def test_only_the_named_hosts_are_listed(world, registry):
    named = ["UDID-D", "UDID-B", "UDID-NONE"]
    assert listed(registry, host_uuids=named) == (["UDID-B", "UDID-D"], 2)
    assert listed(registry, host_uuids=named, query="xq") == (["UDID-D"], 1)
    assert listed(registry, host_uuids=named, per_page=1, page=1) == (["UDID-D"], 2)
    assert listed(registry, host_uuids=[f"UDID-{i}" for i in range(1000)]) == ([], 0)


def test_a_host_carries_its_details_and_unset_times_when_never_seen(world, registry):
    answer = registry.ListHosts(hr.ListHostsRequest(query="xq", per_page=10), timeout=10)
    enrolled, never_seen = answer.hosts
    assert (enrolled.uuid, enrolled.serial_number, enrolled.device_name, enrolled.model,
            enrolled.os_version) == ("UDID-C", "XQ-Three", "UDID-C laptop", "Mac14,2", "14.5")
    assert enrolled.enrolled and enrolled.push_token_invalid
    assert enrolled.HasField("enrolled_at") and enrolled.HasField("last_seen_at")
    assert not never_seen.enrolled and not never_seen.push_token_invalid
    assert not never_seen.HasField("last_seen_at") and not never_seen.HasField("enrolled_at")
    # A host that never sent TokenUpdate: seen, not enrolled.
    [seen] = registry.GetHosts(hr.GetHostsRequest(host_uuids=["UDID-A"]), timeout=10).hosts
    assert seen.last_seen_at.ToDatetime(tzinfo=world.tzinfo) == world + timedelta(hours=1)
    assert not seen.HasField("enrolled_at")


def test_get_hosts_describes_the_known_ones_in_enrollment_order(world, registry):
    def get(uuids):
        return [h.uuid for h in registry.GetHosts(hr.GetHostsRequest(host_uuids=uuids),
                                                  timeout=10).hosts]

    assert get(["UDID-D", "UDID-NONE", "UDID-A"]) == ["UDID-A", "UDID-D"]
    assert get([]) == []
    assert get(["UDID-NONE"]) == []
    assert get(ORDER + [f"UDID-{i}" for i in range(996)]) == ORDER  # 1,000 names


@pytest.mark.parametrize("request_", [
    {"query": "a" * 101, "per_page": 10},
    {"host_uuids": [f"UDID-{i}" for i in range(1001)], "per_page": 10},
    {"per_page": 0},
    {"per_page": 1001},
    {"page": -1, "per_page": 10},
], ids=["long-query", "1001-hosts", "per-page-0", "per-page-1001", "negative-page"])
def test_list_hosts_refuses_bad_requests(world, registry, request_):
    invalid(registry.ListHosts, hr.ListHostsRequest(**request_))


def test_get_hosts_refuses_more_than_1000_names(world, registry):
    invalid(registry.GetHosts, hr.GetHostsRequest(host_uuids=[f"UDID-{i}" for i in range(1001)]))


@pytest.mark.parametrize("caller", ["profile-processor", "scep-proxy", "mdm-endpoint"])
def test_only_admin_config_may_list_hosts(world, server, caller):
    with service_tls(caller).channel(server, "mdm-endpoint") as channel:
        stub = host_registry_pb2_grpc.HostRegistryStub(channel)
        for call in (lambda: stub.ListHosts(hr.ListHostsRequest(per_page=10), timeout=10),
                     lambda: stub.GetHosts(hr.GetHostsRequest(host_uuids=ORDER), timeout=10)):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_mdm_endpoints_own_database_role_answers_both_reads(database_url):
    """As deployed: connected as mdm-endpoint's role, which reaches its own schema alone."""
    db = Database(service_dsn(database_url, "mdm-endpoint"), min_size=0, max_size=1,
                  name="tests-host-registry").open()
    try:
        registry = HostRegistry(db, RecordingPublisher())
        hosts, total = registry.list_hosts("udid", ["UDID-NONE"], 0, 10)
        assert (hosts, total) == ([], 0)
        assert registry.get_hosts(["UDID-NONE"]) == []
    finally:
        db.close()
