"""admin-config's clients of the services that own what it shows (HostRegistry, DeliveryDirectory,
ScepGateway.CaRequestStats), over real gRPC with mutual TLS against recording servicers: what
they ask (the proto's fields, at most 1,000 host UUIDs a call), what they make of the answers
(unset times and latency are None), and that an owner that is down, slow, or not who it should be
becomes a 503 of the admin API rather than a 500."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from admin_config.app import build_services, create_app
from admin_config.delivery_directory_client import DeliveryDirectoryClient, IssuanceRate
from admin_config.errors import ServiceUnavailable
from admin_config.host_registry_client import HostRegistryClient
from admin_config.owner_client import RECONNECT_WAIT_SECONDS
from admin_config.scep_gateway import GatewayUnavailable, ScepGatewayClient
from mdmscep.v1 import (
    delivery_directory_pb2,
    delivery_directory_pb2_grpc,
    host_registry_pb2,
    host_registry_pb2_grpc,
    scep_gateway_pb2,
    scep_gateway_pb2_grpc,
)
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber
from tests.support.ports import free_port
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls, tls_env
from tests.support.settings import load_settings

SEEN = datetime(2026, 1, 31, 12, 0, 5, tzinfo=UTC)


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


class Registry(host_registry_pb2_grpc.HostRegistryServicer):
    def __init__(self):
        self.requests = []
        self.delay = 0.0

    def ListHosts(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        time.sleep(self.delay)
        return host_registry_pb2.ListHostsResponse(hosts=[host_registry_pb2.Host(
            uuid="H-1", serial_number="C02ONE", enrolled=True, last_seen_at=_stamp(SEEN),
            device_name="Mac", model="Mac14,2", os_version="14.5")], total=41)

    def GetHosts(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return host_registry_pb2.GetHostsResponse(hosts=[
            host_registry_pb2.Host(uuid=u, serial_number=f"S-{u}") for u in request.host_uuids
            if not u.startswith("unknown")])


class Directory(delivery_directory_pb2_grpc.DeliveryDirectoryServicer):
    def __init__(self):
        self.requests = []

    def CountDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return delivery_directory_pb2.DeliveryCounts(by_status={"failed": 2, "verified": 5})

    def ListDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return delivery_directory_pb2.ListDeliveriesResponse(deliveries=[
            delivery_directory_pb2.Delivery(
                host_uuid="H-1", profile_uuid="P-1", profile_name="Wi-Fi", identifier="com.x",
                operation_type="install", status="failed", detail="no disk",
                updated_at=_stamp(SEEN))], total=7)

    def ListHostsWithDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return delivery_directory_pb2.ListHostsWithDeliveriesResponse(host_uuids=["H-1", "H-2"],
                                                                      total=12)

    def ListCertificates(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        return delivery_directory_pb2.ListCertificatesResponse(certificates=[
            delivery_directory_pb2.HostCertificate(
                host_uuid="H-1", profile_uuid="", serial="0A", subject="CN=h", issuer="CN=ca",
                not_before=_stamp(SEEN), not_after=_stamp(SEEN))], total=3)

    def GetIssuanceRate(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        if request.ca_id == 404:
            context.abort(grpc.StatusCode.NOT_FOUND, "no certificate authority 404")
        if request.ca_id == 1:  # never changed, no ceiling
            return delivery_directory_pb2.IssuanceRate(per_second=20.0, reason="start")
        return delivery_directory_pb2.IssuanceRate(per_second=12.5, ceiling=40.0,
                                                   reason="slow_answer", changed_at=_stamp(SEEN))


class Gateway(scep_gateway_pb2_grpc.ScepGatewayServicer):
    def __init__(self):
        self.requests = []

    def CaRequestStats(self, request, context):  # noqa: N802 - gRPC method name
        self.requests.append(request)
        answer = scep_gateway_pb2.CaRequestStatsResponse(issued=9, failed=2, refused_busy=4,
                                                         in_flight=1)
        if request.ca_name == "Busy_CA":
            answer.average_latency_ms = 123.456
        return answer


def _serve(service: str, grpc_name: str, add, servicer, tls_service: str | None = None):
    server = GrpcServer(0, [grpc_name], HealthChecks({}), tls=service_tls(tls_service or service))
    server.add(add, servicer)
    server.start()
    return server


@pytest.fixture(scope="module")
def owners():
    registry, directory, gateway = Registry(), Directory(), Gateway()
    servers = {
        "registry": _serve("mdm-endpoint", "mdmscep.v1.HostRegistry",
                           host_registry_pb2_grpc.add_HostRegistryServicer_to_server, registry),
        "directory": _serve("profile-processor", "mdmscep.v1.DeliveryDirectory",
                            delivery_directory_pb2_grpc.add_DeliveryDirectoryServicer_to_server,
                            directory),
        "gateway": _serve("scep-proxy", "mdmscep.v1.ScepGateway",
                          scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server, gateway),
    }
    yield {"registry": registry, "directory": directory, "gateway": gateway,
           **{f"{k}_addr": f"127.0.0.1:{s.port}" for k, s in servers.items()}}
    for server in servers.values():
        server.stop(grace=0)


def _admin_tls():
    return service_tls("admin-config")


def test_host_registry_client_asks_and_reads_as_the_proto_says(owners):
    registry = owners["registry"]
    client = HostRegistryClient(owners["registry_addr"], _admin_tls())
    try:
        registry.requests.clear()
        hosts, total = client.list_hosts(2, 5, "c02", ["H-1", "H-9"])
        [request] = registry.requests
        assert (request.query, list(request.host_uuids), request.page, request.per_page) == (
            "c02", ["H-1", "H-9"], 2, 5)
        assert total == 41
        [host] = hosts
        assert (host.uuid, host.serial_number, host.enrolled, host.device_name) == (
            "H-1", "C02ONE", True, "Mac")
        assert host.last_seen_at == SEEN and host.enrolled_at is None

        registry.requests.clear()
        wanted = [f"H-{n}" for n in range(2500)] + ["unknown-1", "H-7"]  # H-7 twice
        found = client.get_hosts(wanted)
        assert [len(r.host_uuids) for r in registry.requests] == [1000, 1000, 501]
        assert len(found) == 2500 and found["H-2499"].serial_number == "S-H-2499"
        assert "unknown-1" not in found
    finally:
        client.close()


def test_delivery_directory_client_asks_and_reads_as_the_proto_says(owners):
    directory = owners["directory"]
    client = DeliveryDirectoryClient(owners["directory_addr"], _admin_tls())
    try:
        directory.requests.clear()
        assert client.count_deliveries(paced_ca_name="Some_CA") == {"failed": 2, "verified": 5}
        deliveries, total = client.deliveries_of_profile("P-1", "failed", 3, 50)
        assert total == 7 and deliveries[0].detail == "no disk" and deliveries[0].updated_at == SEEN
        client.deliveries_of_host("H-1")
        assert client.hosts_with_deliveries("", "failed", 1, 10, ["H-1"]) == (["H-1", "H-2"], 12)
        [certificate] = client.certificates_of_host("H-1")
        assert certificate.profile_uuid == "" and certificate.not_after == SEEN
        client.certificates(None, 0, 100)
        client.certificates(0.0, 1, 20)
        count, by_profile, by_host, hosts, of_host, every, expiring = directory.requests
        assert (count.paced_ca_name, count.profile_uuid, count.host_uuid) == ("Some_CA", "", "")
        assert (by_profile.profile_uuid, by_profile.host_uuid, by_profile.status, by_profile.page,
                by_profile.per_page) == ("P-1", "", "failed", 3, 50)
        assert (by_host.host_uuid, by_host.profile_uuid, by_host.status) == ("H-1", "", "")
        assert (hosts.profile_uuid, hosts.status, list(hosts.host_uuids), hosts.page,
                hosts.per_page) == ("", "failed", ["H-1"], 1, 10)
        assert of_host.host_uuid == "H-1" and not of_host.HasField("expiring_within_days")
        assert not every.HasField("expiring_within_days") and every.per_page == 100
        # Zero days is a bound (expired certificates only), not "no bound".
        assert expiring.HasField("expiring_within_days") and expiring.expiring_within_days == 0.0
        # Absent fields stay absent; a CA the processor does not know is None, not a 503.
        assert client.issuance_rate(1) == IssuanceRate(20.0, None, "start", None)
        assert client.issuance_rate(2) == IssuanceRate(12.5, 40.0, "slow_answer", SEEN)
        assert client.issuance_rate(404) is None
        assert [r.ca_id for r in directory.requests[-3:]] == [1, 2, 404]
    finally:
        client.close()


def test_ca_request_stats_keep_an_absent_latency_absent(owners):
    client = ScepGatewayClient(owners["gateway_addr"], _admin_tls(), probe_timeout=1.0)
    try:
        quiet = client.ca_request_stats("Quiet_CA", 3600)
        busy = client.ca_request_stats("Busy_CA", 3600)
    finally:
        client.close()
    assert (quiet.issued, quiet.failed, quiet.refused_busy, quiet.in_flight) == (9, 2, 4, 1)
    assert quiet.average_latency_ms is None
    assert busy.average_latency_ms == pytest.approx(123.456)
    assert [(r.ca_name, r.window_seconds) for r in owners["gateway"].requests[-2:]] == [
        ("Quiet_CA", 3600), ("Busy_CA", 3600)]


def test_an_owner_that_is_down_or_slow_is_a_503(owners):
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable) as down:
        HostRegistryClient(nobody, _admin_tls()).list_hosts(0, 10)
    assert down.value.status == 503
    assert down.value.errors == [{"name": "hosts", "reason": "UNAVAILABLE"}]
    assert "MDM endpoint" in down.value.message

    owners["registry"].delay = 1.0
    try:
        slow = HostRegistryClient(owners["registry_addr"], _admin_tls(), timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as late:
            slow.list_hosts(0, 10)
        assert time.monotonic() - started < 0.9
        assert late.value.errors[0]["reason"] == "DEADLINE_EXCEEDED"
    finally:
        owners["registry"].delay = 0.0


class Prober(scep_gateway_pb2_grpc.ScepGatewayServicer):
    def ProbeServer(self, request, context):  # noqa: N802 - gRPC method name
        return scep_gateway_pb2.ProbeServerResponse(ok=True, reason="")


def test_a_probe_waits_a_moment_for_a_proxy_that_failed_to_connect_once():
    port = free_port()
    client = ScepGatewayClient(f"127.0.0.1:{port}", _admin_tls(), probe_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable):  # down: a 503 within the reconnect wait
            client.probe("http://127.0.0.1:1/scep")
        assert time.monotonic() - started < RECONNECT_WAIT_SECONDS + 1.5
        # The channel now backs off in TRANSIENT_FAILURE; the proxy comes up meanwhile.
        server = GrpcServer(port, ["mdmscep.v1.ScepGateway"], HealthChecks({}),
                            tls=service_tls("scep-proxy"))
        server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server, Prober())
        server.start()
        try:
            assert client.probe("http://127.0.0.1:1/scep").ok
        finally:
            server.stop(grace=0)
    finally:
        client.close()


def test_a_server_with_another_services_certificate_is_not_asked(owners):
    # The processor's address answered by a server holding mdm-endpoint's certificate.
    impostor = _serve("profile-processor", "mdmscep.v1.DeliveryDirectory",
                      delivery_directory_pb2_grpc.add_DeliveryDirectoryServicer_to_server,
                      Directory(), tls_service="mdm-endpoint")
    try:
        client = DeliveryDirectoryClient(f"127.0.0.1:{impostor.port}", _admin_tls())
        with pytest.raises(ServiceUnavailable) as refused:
            client.count_deliveries(host_uuid="H-1")
        assert refused.value.errors[0]["reason"] == "UNAVAILABLE"
    finally:
        impostor.stop(grace=0)


def _admin_app(db, env: dict[str, str]):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, **tls_env("admin-config"), **env})
    services = build_services(settings, db, NoProber(), RecordingPublisher())
    return create_app(services, HealthChecks({})).test_client()


# Each call to the down owner first waits out its channel's reconnection (RECONNECT_WAIT_SECONDS).
@pytest.mark.slow
def test_the_admin_api_answers_503_while_an_owner_is_down(owners, db):
    down = f"127.0.0.1:{free_port()}"
    client = _admin_app(db, {"MDM_GRPC_ADDR": down, "PROCESSOR_GRPC_ADDR": owners["directory_addr"],
                             "SCEP_PROXY_GRPC_ADDR": owners["gateway_addr"]})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path in ("/api/v1/fleet/hosts", "/api/v1/fleet/hosts/H-1",
                 "/api/v1/fleet/hosts/H-1/configuration_profiles",
                 "/api/v1/fleet/hosts/H-1/certificates"):
        response = client.get(path, headers=auth)
        assert response.status_code == 503, path
        assert response.get_json()["message"] == "The MDM endpoint is unavailable; try again shortly."

    client = _admin_app(db, {"MDM_GRPC_ADDR": owners["registry_addr"], "PROCESSOR_GRPC_ADDR": down,
                             "SCEP_PROXY_GRPC_ADDR": owners["gateway_addr"]})
    for path in ("/api/v1/fleet/certificates", "/api/v1/fleet/hosts?status=failed",
                 "/api/v1/fleet/hosts/H-1"):
        response = client.get(path, headers=auth)
        assert response.status_code == 503, path
        assert "profile processor" in response.get_json()["message"]


def test_the_admin_api_shows_what_the_real_clients_bring(owners, db):
    client = _admin_app(db, {"MDM_GRPC_ADDR": owners["registry_addr"],
                             "PROCESSOR_GRPC_ADDR": owners["directory_addr"],
                             "SCEP_PROXY_GRPC_ADDR": owners["gateway_addr"]})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    listed = client.get("/api/v1/fleet/hosts?per_page=5", headers=auth).get_json()
    assert listed == {"hosts": [{"uuid": "H-1", "serial_number": "C02ONE", "enrolled": True,
                                 "last_seen_at": "2026-01-31T12:00:05Z", "team_id": None}],
                      "meta": {"total": 41, "page": 0, "per_page": 5}}
    detail = client.get("/api/v1/fleet/hosts/H-1", headers=auth).get_json()
    assert detail["profiles"] == {"pending": 0, "verifying": 0, "verified": 5, "failed": 2}
    assert detail["enrolled_at"] is None and detail["push_token_invalid"] is False


def test_concurrent_admin_requests_share_one_channel_per_owner(owners):
    # gunicorn's threads call one client at once: each call gets its own answer.
    client = HostRegistryClient(owners["registry_addr"], _admin_tls())
    results, errors = [], []

    def ask():
        try:
            results.append(client.get_hosts(["H-a", "H-b"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    client.close()
    assert errors == [] and len(results) == 16
    assert all(set(r) == {"H-a", "H-b"} for r in results)
