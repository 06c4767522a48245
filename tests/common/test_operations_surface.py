"""The operational surface in isolation: route-labelled HTTP metrics, gRPC call metrics, expiring
credential checks, the previous-key fallback, push result labels and the new settings."""

from __future__ import annotations

import datetime
from datetime import UTC

import grpc
import pytest
from flask import Flask
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from admin_config.background_duties import stage
from mdm_endpoint.push import PushOutcome, result_label
from mdmscep_common import credentials
from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.http import register_healthz, register_metrics
from mdmscep_common.settings import SettingsError
from tests.support.expiring_pki import ca_pem
from tests.support.service_certs import service_tls
from tests.support.settings import load_settings

KEY = "unit-test-server-private-key-0123456789"


def sample(metric, /, **labels):
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_http_metrics_are_labelled_by_route_never_by_path():
    app = Flask("t")

    @app.get("/mdm/scep/proxy/<path:raw_id>")
    def proxy(raw_id):
        return "no", 403

    register_metrics(app)
    client = app.test_client()
    route = "/mdm/scep/proxy/<path:raw_id>"
    before = sample("mdmscep_http_requests_total", route=route, method="GET", status="403")
    client.get("/mdm/scep/proxy/HOST%2CPROFILE%2CCA%2Csecret-one-time-code")
    client.get("/nowhere/secret-two")
    assert sample("mdmscep_http_requests_total", route=route, method="GET",
                  status="403") == before + 1
    assert sample("mdmscep_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert sample("mdmscep_http_request_duration_seconds_count", route=route, method="GET") >= 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "mdmscep_http_requests_total" in text
    assert "secret-one-time-code" not in text and "secret-two" not in text and "HOST" not in text


def test_grpc_calls_are_counted_by_method_and_code():
    server = GrpcServer(0, ["mdmscep.v1.Demo"], HealthChecks({}), tls=service_tls("scep-proxy"))
    server.start()
    method = "/grpc.health.v1.Health/Check"
    ok = sample("mdmscep_grpc_requests_total", method=method, code="OK")
    missing = sample("mdmscep_grpc_requests_total", method=method, code="NOT_FOUND")
    try:
        with service_tls("admin-config").channel(f"127.0.0.1:{server.port}",
                                                 "scep-proxy") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            with pytest.raises(grpc.RpcError) as failure:
                stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(grace=0)
    assert sample("mdmscep_grpc_requests_total", method=method, code="OK") == ok + 1
    assert sample("mdmscep_grpc_requests_total", method=method, code="NOT_FOUND") == missing + 1
    assert sample("mdmscep_grpc_request_duration_seconds_count", method=method) >= 2


def _monitor(tmp_path, days, warning_days=30.0, reported=None):
    path = tmp_path / "push.pem"
    path.write_bytes(ca_pem("Push", days))
    return credentials.CredentialMonitor(
        {credentials.PUSH_CERTIFICATE: lambda: credentials.credentials_from_file(
            credentials.PUSH_CERTIFICATE, "APNS_CERT", str(path))},
        warning_days, expiring=(reported.append if reported is not None else None))


def test_a_certificate_inside_the_window_warns_in_healthz_without_changing_the_status(tmp_path):
    reported = []
    monitor = _monitor(tmp_path, days=3, reported=reported)
    app = Flask("t")
    register_healthz(app, HealthChecks({"database": lambda: True}), monitor.warnings)
    assert app.test_client().get("/healthz").json["warnings"] == []
    [credential] = monitor.check()
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok"
    [warning] = response.json["warnings"]
    assert warning["kind"] == "push_certificate" and warning["name"] == "APNS_CERT"
    assert 2.9 < warning["days_left"] <= 3 and "expires in 3 days" in warning["message"]
    assert reported == [credential] and len(credential.fingerprint) == 64
    assert 2.9 < sample("mdmscep_credential_expiry_days", kind="push_certificate",
                        name="APNS_CERT") <= 3


def test_a_certificate_outside_the_window_is_measured_only(tmp_path):
    reported = []
    monitor = _monitor(tmp_path, days=90, reported=reported)
    assert monitor.check() == [] and monitor.warnings() == [] and reported == []
    assert sample("mdmscep_credential_expiry_days", kind="push_certificate", name="APNS_CERT") > 89


def test_an_unreadable_certificate_is_a_warning_too(tmp_path):
    monitor = credentials.CredentialMonitor(
        {credentials.IDENTITY_CA: lambda: credentials.credentials_from_file(
            credentials.IDENTITY_CA, "MDM_IDENTITY_CA_CERTS", str(tmp_path / "missing.pem"))}, 30)
    before = sample("mdmscep_credential_check_failures_total", kind="identity_ca")
    assert monitor.check() == []
    [warning] = monitor.warnings()
    assert "cannot check device identity CA" in warning["message"]
    assert sample("mdmscep_credential_check_failures_total", kind="identity_ca") == before + 1


def test_an_expired_certificate_says_so(tmp_path):
    now = datetime.datetime.now(UTC)
    credential = credentials.Credential("custom_ca", "Old_CA", "Old", now - datetime.timedelta(days=2),
                                        "ab" * 32)
    assert "expired 2 days ago" in credential.warning(now)["message"]


@pytest.mark.parametrize("days_left, expected", [(29, "30d"), (7.5, "30d"), (6.9, "7d"),
                                                 (0.5, "1d"), (0, "expired"), (-3, "expired")])
def test_reminder_stages(days_left, expected):
    assert stage(days_left, 30) == expected


def test_the_previous_key_opens_old_secrets_while_new_ones_use_the_current_key():
    old, new = "old-unit-test-server-private-key-0123", "new-unit-test-server-private-key-4567"
    stored_old = SecretBox(old).encrypt("challenge", b"ca:1")
    box = SecretBox(new, previous_server_private_key=old)
    before = sample("mdmscep_secrets_opened_with_previous_key_total")
    assert box.decrypt(stored_old, b"ca:1") == "challenge"
    assert sample("mdmscep_secrets_opened_with_previous_key_total") == before + 1
    assert not box.opens_with_current_key(stored_old, b"ca:1")
    fresh = box.encrypt("challenge", b"ca:1")
    assert SecretBox(new).decrypt(fresh, b"ca:1") == "challenge"
    with pytest.raises(DecryptionError):
        SecretBox(old).decrypt(fresh, b"ca:1")
    with pytest.raises(DecryptionError):  # the associated data still binds it to its row
        box.decrypt(stored_old, b"ca:2")
    settings = load_settings({"SERVER_PRIVATE_KEY": new, "SERVER_PRIVATE_KEY_PREVIOUS": old})
    assert SecretBox.from_settings(settings).decrypt(stored_old, b"ca:1") == "challenge"
    assert old in settings.secret_values() and old not in repr(settings)


def test_operations_settings_defaults_and_validation():
    s = load_settings({"SERVER_PRIVATE_KEY": KEY})
    assert s.server_private_key_previous is None
    assert (s.processor_metrics_port, s.mdm_grpc_metrics_port, s.mdm_push_metrics_port,
            s.scep_proxy_grpc_metrics_port) == (9101, 9102, 9103, 9104)
    assert (s.command_retention_days, s.scep_code_retention_days, s.activity_retention_days) == \
        (2, 1, 365)
    assert (s.prune_interval, s.prune_batch_size) == (600, 5000)
    assert (s.credential_check_interval, s.credential_warning_days) == (86400, 30)
    assert load_settings({"SERVER_PRIVATE_KEY": KEY, "PROCESSOR_METRICS_PORT": "0"}) \
        .processor_metrics_port == 0
    for env, message in (({"SERVER_PRIVATE_KEY_PREVIOUS": "short"}, "SERVER_PRIVATE_KEY_PREVIOUS"),
                         ({"MDM_PUSH_METRICS_PORT": "70000"}, "MDM_PUSH_METRICS_PORT"),
                         ({"PRUNE_BATCH_SIZE": "0"}, "PRUNE_BATCH_SIZE"),
                         ({"ACTIVITY_RETENTION_DAYS": "x"}, "ACTIVITY_RETENTION_DAYS")):
        with pytest.raises(SettingsError, match=message):
            load_settings({"SERVER_PRIVATE_KEY": KEY, **env})


@pytest.mark.parametrize("outcome, label", [
    (PushOutcome("h", 200, ""), "delivered"),
    (PushOutcome("h", 410, "Unregistered"), "Unregistered"),
    (PushOutcome("h", 0, "ConnectError"), "network_error"),
    (PushOutcome("h", 502, "<html>bad gateway from some proxy</html>"), "http_502"),
])
def test_push_results_are_labelled_by_known_reasons_only(outcome, label):
    assert result_label(outcome) == label
