"""The processor's DeliveryDirectory over mutual-TLS gRPC, as admin-config calls it: counts, pages
and filters of deliveries (host_profiles) and host certificates (host_certificates), the
requests it refuses (INVALID_ARGUMENT), and every other service's certificate refused.

The server reads the test's own transaction (the `db` fixture), so the rows below are the only
ones it sees, and now() is the same instant for the rows and the server's queries."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import grpc
import pytest

from mdmscep.v1 import delivery_directory_pb2 as dd
from mdmscep.v1 import delivery_directory_pb2_grpc
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.service_database import service_dsn
from profile_processor.delivery_directory import (
    DeliveryDirectory,
    DeliveryDirectoryServicer,
    UnknownCertificateAuthority,
)
from tests.support.processor_read_models import copy_owned_rows_to_processor
from tests.support.service_certs import service_tls

SUFFIX = uuid.uuid4().hex[:8]
PACED_CA, OTHER_CA = f"Paced_CA_{SUFFIX}", f"Other_CA_{SUFFIX}"
P1, P2, GONE = f"p1-{SUFFIX}", f"p2-{SUFFIX}", f"gone-{SUFFIX}"

# (host, profile, operation, status, paced_until in minutes from now, created minutes after t0)
DELIVERIES = [
    ("HOST-C", P1, "install", "pending", 60, 1),
    ("HOST-A", P1, "install", "verified", None, 2),
    ("HOST-B", P1, "install", "failed", None, 3),
    ("HOST-D", P1, "install", "pending", -60, 4),  # its pacing is over: not waiting
    ("HOST-E", P1, "install", "pending", 60, 5),
    ("HOST-A", P2, "install", "pending", 60, 0),  # paced, but for the other CA
    ("HOST-A", GONE, "remove", "pending", None, 1),  # its profile was deleted
    ("HOST-B", P2, "install", "verifying", None, 0),
]
# (host, profile, serial, not_after in days from now)
CERTIFICATES = [
    ("HOST-A", P1, "0A", 10), ("HOST-A", P1, "0B", 10), ("HOST-B", P1, "01", 10),
    ("HOST-C", P2, "02", 400), ("HOST-B", P2, "03", 2),
]


@pytest.fixture
def world(db, db_conn):
    """Only this test's deliveries and certificates; returns the transaction's now()."""
    db_conn.execute("DELETE FROM host_profiles")
    db_conn.execute("DELETE FROM host_certificates")
    now = db_conn.execute("SELECT now() AS now").fetchone()["now"]
    t0 = now - timedelta(days=1)
    ca_ids = {}
    for name in (PACED_CA, OTHER_CA):
        ca_ids[name] = db_conn.execute(
            "INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
            "VALUES (%s, 'http://ca.test/scep', '\\x00') RETURNING id", (name,)).fetchone()["id"]
    for profile, ca in ((P1, PACED_CA), (P2, OTHER_CA)):
        db_conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                        "VALUES (%s, %s, %s, 'u', '', '')", (profile, f"now {profile}",
                                                             f"com.{profile}"))
        db_conn.execute("INSERT INTO profile_certificate_authorities VALUES (%s, %s)",
                        (profile, ca_ids[ca]))
    copy_owned_rows_to_processor(db_conn)
    for host, profile, operation, status, paced, created in DELIVERIES:
        db_conn.execute(
            "INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, profile_name, "
            "operation_type, status, detail, paced_until, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (host, profile, f"com.{profile}", f"sent {profile}", operation, status,
             f"{status} on {host}", None if paced is None else now + timedelta(minutes=paced),
             t0 + timedelta(minutes=created), t0 + timedelta(minutes=created, seconds=30)))
    for host, profile, serial, days in CERTIFICATES:
        db_conn.execute(
            "INSERT INTO host_certificates (host_uuid, profile_uuid, sha256, serial, subject, "
            "issuer, not_before, not_after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (host, profile, f"{host}{serial}".encode(), serial, f"CN={host}", f"CN={profile} CA",
             now - timedelta(days=1), now + timedelta(days=days)))
    return now


@pytest.fixture
def server(db):
    server = GrpcServer(0, ["mdmscep.v1.DeliveryDirectory"], HealthChecks({}),
                        tls=service_tls("profile-processor"))
    server.add(delivery_directory_pb2_grpc.add_DeliveryDirectoryServicer_to_server,
               DeliveryDirectoryServicer(DeliveryDirectory(db)))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.fixture
def directory(server):
    """A stub with admin-config's certificate."""
    with service_tls("admin-config").channel(server, "profile-processor") as channel:
        yield delivery_directory_pb2_grpc.DeliveryDirectoryStub(channel)


def invalid(call, request) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    return refused.value.details()


# --- CountDeliveries -------------------------------------------------------------------------

def test_counts_a_profiles_installs_a_hosts_all_and_a_cas_paced(world, directory):
    def count(**kw):
        return dict(directory.CountDeliveries(dd.CountDeliveriesRequest(**kw), timeout=10).by_status)

    assert count(profile_uuid=P1) == {"pending": 3, "verified": 1, "failed": 1}
    assert count(profile_uuid=P2) == {"pending": 1, "verifying": 1}
    assert count(profile_uuid=GONE) == {}  # a removal is no install
    assert count(host_uuid="HOST-A") == {"pending": 2, "verified": 1}  # the removal counts
    assert count(host_uuid="HOST-NONE") == {}
    # Pending installs still waiting for their turn (HOST-C and HOST-E), of profiles using the CA.
    assert count(paced_ca_name=PACED_CA) == {"pending": 2}
    assert count(paced_ca_name=OTHER_CA) == {"pending": 1}
    assert count(paced_ca_name=f"Unknown_{SUFFIX}") == {}


@pytest.mark.parametrize("request_", [
    {}, {"profile_uuid": P1, "host_uuid": "HOST-A"}, {"host_uuid": "HOST-A", "paced_ca_name": PACED_CA},
    {"profile_uuid": P1, "host_uuid": "HOST-A", "paced_ca_name": PACED_CA},
    {"paced_ca_name": "not a CA name"},
], ids=["none", "profile-and-host", "host-and-ca", "all-three", "bad-ca-name"])
def test_count_needs_exactly_one_valid_subject(world, directory, request_):
    invalid(directory.CountDeliveries, dd.CountDeliveriesRequest(**request_))


# --- ListDeliveries --------------------------------------------------------------------------

def test_a_profiles_deliveries_come_by_host_uuid_page_by_page(world, directory):
    def page(n, per_page=2, status=""):
        answer = directory.ListDeliveries(dd.ListDeliveriesRequest(
            profile_uuid=P1, status=status, page=n, per_page=per_page), timeout=10)
        return [d.host_uuid for d in answer.deliveries], answer.total

    assert page(0) == (["HOST-A", "HOST-B"], 5)
    assert page(1) == (["HOST-C", "HOST-D"], 5)
    assert page(2) == (["HOST-E"], 5)
    assert page(3) == ([], 5)
    assert page(0, per_page=1000) == (["HOST-A", "HOST-B", "HOST-C", "HOST-D", "HOST-E"], 5)
    assert page(0, status="pending") == (["HOST-C", "HOST-D"], 3)
    assert page(1, status="pending") == (["HOST-E"], 3)
    assert page(0, status="verifying") == ([], 0)


def test_a_delivery_carries_the_processors_own_columns(world, directory):
    answer = directory.ListDeliveries(dd.ListDeliveriesRequest(
        profile_uuid=P1, status="failed", page=0, per_page=10), timeout=10)
    [delivery] = answer.deliveries
    assert (delivery.host_uuid, delivery.profile_uuid, delivery.profile_name, delivery.identifier,
            delivery.operation_type, delivery.status, delivery.detail) == \
        ("HOST-B", P1, f"sent {P1}", f"com.{P1}", "install", "failed", "failed on HOST-B")
    t0 = world - timedelta(days=1)
    assert delivery.updated_at.ToDatetime(tzinfo=world.tzinfo) == t0 + timedelta(minutes=3, seconds=30)


def test_a_hosts_deliveries_come_all_at_once_as_created(world, directory):
    def of_host(status="", **paging):
        answer = directory.ListDeliveries(dd.ListDeliveriesRequest(
            host_uuid="HOST-A", status=status, **paging), timeout=10)
        return [(d.profile_uuid, d.operation_type) for d in answer.deliveries], answer.total

    everything = ([(P2, "install"), (GONE, "remove"), (P1, "install")], 3)
    assert of_host() == everything  # no paging asked: a host's come whole
    assert of_host(page=5, per_page=1) == everything  # paging is for a profile's only
    assert of_host(status="pending") == ([(P2, "install"), (GONE, "remove")], 2)
    assert directory.ListDeliveries(dd.ListDeliveriesRequest(host_uuid="HOST-NONE"),
                                    timeout=10).total == 0


@pytest.mark.parametrize("request_", [
    {"page": 0, "per_page": 10},
    {"profile_uuid": P1, "host_uuid": "HOST-A", "page": 0, "per_page": 10},
    {"profile_uuid": P1, "status": "done", "page": 0, "per_page": 10},
    {"host_uuid": "HOST-A", "status": "PENDING"},
    {"profile_uuid": P1, "page": 0, "per_page": 0},
    {"profile_uuid": P1, "page": 0, "per_page": 1001},
    {"profile_uuid": P1, "page": -1, "per_page": 10},
], ids=["neither", "both", "unknown-status", "status-case", "per-page-0", "per-page-1001",
        "negative-page"])
def test_list_deliveries_refuses_bad_requests(world, directory, request_):
    invalid(directory.ListDeliveries, dd.ListDeliveriesRequest(**request_))


# --- ListHostsWithDeliveries -----------------------------------------------------------------

def test_hosts_with_deliveries_are_distinct_in_uuid_order_and_paged(world, directory):
    def hosts(per_page=100, page=0, **kw):
        answer = directory.ListHostsWithDeliveries(dd.ListHostsWithDeliveriesRequest(
            page=page, per_page=per_page, **kw), timeout=10)
        return list(answer.host_uuids), answer.total

    assert hosts(status="failed") == (["HOST-B"], 1)
    assert hosts(profile_uuid=P2) == (["HOST-A", "HOST-B"], 2)
    # HOST-A has two pending deliveries and is listed once.
    assert hosts(status="pending") == (["HOST-A", "HOST-C", "HOST-D", "HOST-E"], 4)
    assert hosts(profile_uuid=P1, status="pending", per_page=2) == (["HOST-C", "HOST-D"], 3)
    assert hosts(profile_uuid=P1, status="pending", per_page=2, page=1) == (["HOST-E"], 3)
    assert hosts(profile_uuid=P1, status="verifying") == ([], 0)
    assert hosts(status="pending", host_uuids=["HOST-E", "HOST-B", "HOST-A", "HOST-NONE"]) == \
        (["HOST-A", "HOST-E"], 2)
    assert hosts(status="pending", host_uuids=[f"HOST-{i}" for i in range(1000)]) == ([], 0)


@pytest.mark.parametrize("request_", [
    {"page": 0, "per_page": 10},
    {"host_uuids": ["HOST-A"], "page": 0, "per_page": 10},
    {"status": "lost", "page": 0, "per_page": 10},
    {"status": "pending", "host_uuids": [f"HOST-{i}" for i in range(1001)], "page": 0,
     "per_page": 10},
    {"status": "pending", "page": 0, "per_page": 0},
    {"status": "pending", "page": -1, "per_page": 10},
], ids=["no-filter", "hosts-only", "unknown-status", "1001-hosts", "per-page-0", "negative-page"])
def test_hosts_with_deliveries_refuses_bad_requests(world, directory, request_):
    invalid(directory.ListHostsWithDeliveries, dd.ListHostsWithDeliveriesRequest(**request_))


# --- ListCertificates ------------------------------------------------------------------------

def serials(answer) -> list[tuple[str, str]]:
    return [(c.host_uuid, c.serial) for c in answer.certificates]


def test_every_hosts_certificates_come_by_expiry_then_host_then_serial(world, directory):
    def page(n, per_page=2, **kw):
        answer = directory.ListCertificates(dd.ListCertificatesRequest(
            page=n, per_page=per_page, **kw), timeout=10)
        return serials(answer), answer.total

    assert page(0) == ([("HOST-B", "03"), ("HOST-A", "0A")], 5)
    assert page(1) == ([("HOST-A", "0B"), ("HOST-B", "01")], 5)
    assert page(2) == ([("HOST-C", "02")], 5)
    # Expiring within: strictly before now + the days.
    assert page(0, per_page=10, expiring_within_days=5) == ([("HOST-B", "03")], 1)
    assert page(0, per_page=10, expiring_within_days=10) == ([("HOST-B", "03")], 1)
    assert page(0, per_page=3, expiring_within_days=10.5) == \
        ([("HOST-B", "03"), ("HOST-A", "0A"), ("HOST-A", "0B")], 4)
    assert page(0, per_page=10, expiring_within_days=0) == ([], 0)
    assert page(0, per_page=10, expiring_within_days=36500)[1] == 5


def test_a_hosts_certificates_come_whole_by_expiry_then_serial(world, directory):
    def of_host(host, **kw):
        answer = directory.ListCertificates(dd.ListCertificatesRequest(host_uuid=host, **kw),
                                            timeout=10)
        return serials(answer), answer.total

    assert of_host("HOST-A") == ([("HOST-A", "0A"), ("HOST-A", "0B")], 2)
    assert of_host("HOST-B") == ([("HOST-B", "03"), ("HOST-B", "01")], 2)
    assert of_host("HOST-B", expiring_within_days=5) == ([("HOST-B", "03")], 1)
    assert of_host("HOST-NONE") == ([], 0)
    [certificate] = directory.ListCertificates(dd.ListCertificatesRequest(host_uuid="HOST-C"),
                                               timeout=10).certificates
    assert (certificate.profile_uuid, certificate.subject, certificate.issuer) == \
        (P2, "CN=HOST-C", f"CN={P2} CA")
    assert certificate.not_before.ToDatetime(tzinfo=world.tzinfo) == world - timedelta(days=1)
    assert certificate.not_after.ToDatetime(tzinfo=world.tzinfo) == world + timedelta(days=400)


@pytest.mark.parametrize("request_", [
    {"expiring_within_days": -1, "page": 0, "per_page": 10},
    {"expiring_within_days": 36501, "page": 0, "per_page": 10},
    {"expiring_within_days": math.nan, "page": 0, "per_page": 10},
    {"host_uuid": "HOST-A", "expiring_within_days": math.inf},
    {"page": 0, "per_page": 0},
    {"page": 0, "per_page": 1001},
    {"page": -1, "per_page": 10},
], ids=["negative-days", "too-many-days", "nan-days", "infinite-days", "per-page-0",
        "per-page-1001", "negative-page"])
def test_list_certificates_refuses_bad_requests(world, directory, request_):
    invalid(directory.ListCertificates, dd.ListCertificatesRequest(**request_))


# --- GetIssuanceRate ------------------------------------------------------------------------

def test_the_issuance_rate_of_a_ca_is_its_start_until_its_answers_move_it(world, directory,
                                                                           db_conn):
    ca_id = db_conn.execute("SELECT id FROM known_certificate_authorities WHERE name = %s",
                            (PACED_CA,)).fetchone()["id"]
    start = directory.GetIssuanceRate(dd.GetIssuanceRateRequest(ca_id=ca_id), timeout=10)
    # 4 slots (the default) × 5/s; no ceiling, never changed: both absent.
    assert (start.per_second, start.reason) == (20.0, "start")
    assert not start.HasField("ceiling") and not start.HasField("changed_at")
    db_conn.execute("UPDATE known_certificate_authorities SET max_issuance_per_second = 50 "
                    "WHERE id = %s", (ca_id,))
    db_conn.execute("INSERT INTO ca_pacing (ca_id, per_second, reason, changed_at) "
                    "VALUES (%s, 7.5, 'slow_answer', now())", (ca_id,))
    learned = directory.GetIssuanceRate(dd.GetIssuanceRateRequest(ca_id=ca_id), timeout=10)
    assert (learned.per_second, learned.ceiling, learned.reason) == (7.5, 50.0, "slow_answer")
    assert learned.changed_at.ToDatetime(tzinfo=world.tzinfo) == world
    with pytest.raises(grpc.RpcError) as unknown:
        directory.GetIssuanceRate(dd.GetIssuanceRateRequest(ca_id=0), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_delivery_in_a_cas_queue_waits_for_its_turn_too(world, directory, db_conn):
    ca_id = db_conn.execute("SELECT id FROM known_certificate_authorities WHERE name = %s",
                            (PACED_CA,)).fetchone()["id"]
    # HOST-D's held slot is past; queued for the CA (no slot yet), it waits again.
    db_conn.execute("UPDATE host_profiles SET queued_for_ca = %s WHERE host_uuid = 'HOST-D' "
                    "AND profile_uuid = %s", (ca_id, P1))
    assert dict(directory.CountDeliveries(dd.CountDeliveriesRequest(paced_ca_name=PACED_CA),
                                          timeout=10).by_status) == {"pending": 3}


def _issuance_rate_of_no_ca(stub):
    """Asked as admin-config, the answer is NOT_FOUND; another caller is refused before that."""
    try:
        return stub.GetIssuanceRate(dd.GetIssuanceRateRequest(ca_id=0), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return exc.code()


# --- callers ---------------------------------------------------------------------------------

CALLS = {
    "CountDeliveries": lambda stub: stub.CountDeliveries(
        dd.CountDeliveriesRequest(host_uuid="HOST-A"), timeout=10),
    "ListDeliveries": lambda stub: stub.ListDeliveries(
        dd.ListDeliveriesRequest(host_uuid="HOST-A"), timeout=10),
    "ListHostsWithDeliveries": lambda stub: stub.ListHostsWithDeliveries(
        dd.ListHostsWithDeliveriesRequest(status="pending", page=0, per_page=10), timeout=10),
    "ListCertificates": lambda stub: stub.ListCertificates(
        dd.ListCertificatesRequest(host_uuid="HOST-A"), timeout=10),
    "GetIssuanceRate": _issuance_rate_of_no_ca,
}


@pytest.mark.parametrize("caller", ["mdm-endpoint", "scep-proxy", "profile-processor"])
@pytest.mark.parametrize("method", sorted(CALLS))
def test_only_admin_config_may_read_the_directory(world, server, directory, caller, method):
    assert CALLS[method](directory) is not None  # admin-config's certificate: answered
    with service_tls(caller).channel(server, "profile-processor") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            CALLS[method](delivery_directory_pb2_grpc.DeliveryDirectoryStub(channel))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "HOST-A" not in refused.value.details()


def test_the_processors_own_database_role_answers_every_read(database_url):
    """As deployed: connected as the processor's role, which reaches its own schema and reads
    only the CA tables it is granted (for the paced count)."""
    db = Database(service_dsn(database_url, "profile-processor"), min_size=0, max_size=1,
                  name="tests-delivery-directory").open()
    try:
        directory = DeliveryDirectory(db)
        assert directory.count(None, None, PACED_CA) == {}
        assert directory.count(P1, None, None) == {}
        assert directory.count(None, "HOST-A", None) == {}
        assert directory.deliveries(P1, None, "pending", 0, 10) == ([], 0)
        assert directory.deliveries(None, "HOST-A", None, 0, 0) == ([], 0)
        assert directory.hosts_with_deliveries(P1, "failed", ["HOST-A"], 0, 10) == ([], 0)
        assert directory.certificates(None, 30.0, 0, 10)[1] >= 0
        assert directory.certificates("HOST-A", None, 0, 0) == ([], 0)
        with pytest.raises(UnknownCertificateAuthority):
            directory.issuance_rate(0)
    finally:
        db.close()
