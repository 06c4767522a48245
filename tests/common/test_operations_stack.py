"""What operators see, on the stack started by `make run`'s launcher (every process real, two
gunicorn workers per HTTP service): `/metrics` on every process, moving with activity and free of
codes and hosts; expiring credentials (a push certificate valid 5 more days, a custom CA valid 10)
as `/healthz` warnings, metrics, log lines and one `credential_expiring` activity each; each
owner's pruning timer running; and internal gRPC on loopback, each program with its own
service's certificate."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from admin_config.certificate_authorities import challenge_context
from mdmscep.v1 import commander_pb2, commander_pb2_grpc
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import drop_database, ensure_database
from mdmscep_common.mdm_commands import profile_list
from mdmscep_common.migrate import apply_migrations
from mdmscep_common.service_tls import SERVICES
from tests.conftest import ADMIN_TOKEN, AMQP_BASE, PG_BASE, RUN_ID, SERVER_PRIVATE_KEY, _rabbitmqctl
from tests.support.expiring_pki import ca_pem, push_certificate
from tests.support.ports import free_port
from tests.support.stack import (
    GRPC_SERVERS,
    listening_addresses,
    program_environment,
    start_stack,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

METRICS_PORTS = ("PROCESSOR_METRICS_PORT", "MDM_GRPC_METRICS_PORT", "MDM_PUSH_METRICS_PORT",
                 "SCEP_PROXY_GRPC_METRICS_PORT", "ADMIN_WORKER_METRICS_PORT")
HTTP_PORTS = ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, metric: str, /, **labels: str) -> float:
        """Sum of the samples of `metric` whose labels include `labels` (0 when none)."""
        return sum(s.value for s in self.samples if s.name == metric
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    def has(self, metric: str, /, **labels: str) -> bool:
        return any(s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples)


@pytest.fixture(scope="module")
def ops(base_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    database_url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_ops"
    drop_database(database_url)
    ensure_database(database_url)
    apply_migrations(database_url)
    # A custom CA whose certificate expires in 10 days, as GetCACert returned it when saved.
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted, "
                     "ca_certificates_pem) VALUES (%s, %s, %s, %s)",
                     ("Expiring_CA", "http://127.0.0.1:9/scep",
                      SecretBox(SERVER_PRIVATE_KEY).encrypt("x-challenge",
                                                            challenge_context("Expiring_CA")),
                      ca_pem("Expiring Custom CA", days=10).decode()))
    vhost = f"mdmscep_test_{RUN_ID}_ops"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    push = push_certificate(root / "apns", days=5)
    identity = root / "identity-ca.pem"
    identity.write_bytes(ca_pem("Long Lived Identity CA", days=400))
    stack = start_stack({**base_env, "DATABASE_URL": database_url,
                         "AMQP_URL": f"{AMQP_BASE}/{vhost}"}, root / "stack",
                        APNS_CERT=str(push.cert), APNS_KEY=str(push.key),
                        APNS_URL=f"https://127.0.0.1:{free_port()}",  # nothing listens: pushes fail
                        MDM_IDENTITY_CA_CERTS=str(identity), HTTP_WORKERS="2",
                        PRUNE_INTERVAL="2", PROFILE_RECONCILE_INTERVAL="2",
                        **{var: str(free_port()) for var in METRICS_PORTS})
    try:
        stack.wait_healthy(timeout=90)
        yield {"stack": stack, "database_url": database_url,
               "amqp_url": f"{AMQP_BASE}/{vhost}"}
    finally:
        stack.stop()
        drop_database(database_url)
        _rabbitmqctl("delete_vhost", vhost)


def scrape(ops, var: str) -> Scrape:
    response = httpx.get(ops["stack"].url(var) + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def test_every_process_serves_metrics(ops):
    for var in HTTP_PORTS:
        text = scrape(ops, var).text
        assert "# TYPE mdmscep_http_requests_total counter" in text, var
    processor = wait_for(lambda: (s := scrape(ops, "PROCESSOR_METRICS_PORT")).has(
        "mdmscep_prune_last_success_timestamp_seconds", table="scep_codes") and s,
        what="the processor's first pruning run")
    assert processor.value("mdmscep_reconcile_pass_duration_seconds_count") >= 1
    assert processor.has("mdmscep_bus_queue_depth", queue="profile_processor.events.dlq")
    assert processor.value("mdmscep_grpc_requests_total", code="OK",
                           method="/grpc.health.v1.Health/Check") >= 1
    commander = wait_for(lambda: (s := scrape(ops, "MDM_GRPC_METRICS_PORT")).has(
        "mdmscep_prune_last_success_timestamp_seconds", table="commands") and s,
        what="mdm-endpoint grpc's first pruning run")
    assert commander.has("mdmscep_prune_last_success_timestamp_seconds", table="commands_replaced")
    push = scrape(ops, "MDM_PUSH_METRICS_PORT")
    assert push.has("mdmscep_bus_queue_depth", queue="mdm_endpoint.push_requested.dlq")
    assert "# TYPE mdmscep_push_results_total counter" in push.text
    gateway = scrape(ops, "SCEP_PROXY_GRPC_METRICS_PORT")
    assert gateway.value("mdmscep_grpc_requests_total",
                         method="/grpc.health.v1.Health/Check") >= 1
    # admin-config's background duties and outbox relay run in its worker, not in gunicorn.
    admin = wait_for(lambda: (s := scrape(ops, "ADMIN_WORKER_METRICS_PORT")).has(
        "mdmscep_prune_last_success_timestamp_seconds", table="activities") and s,
        what="admin-config's first pruning run")
    assert admin.has("mdmscep_bus_queue_depth", queue="admin_config.events")
    assert admin.has("mdmscep_prune_last_success_timestamp_seconds", table="admin_config_inbox")
    assert admin.has("mdmscep_outbox_unpublished", table="admin_config_outbox")
    assert not scrape(ops, "ADMIN_HTTP_PORT").has("mdmscep_bus_queue_depth",
                                                   queue="admin_config.events")


def test_metrics_move_with_activity_and_carry_no_codes_or_hosts(ops, custom_ca):
    stack = ops["stack"]
    before = {var: scrape(ops, var) for var in (*HTTP_PORTS, *METRICS_PORTS)}

    # admin-config → ScepGateway (gRPC) → config.changed → processor (bus, reconcile pass)
    created = httpx.post(stack.admin_url + "/api/v1/fleet/certificate_authorities", headers=AUTH,
                         timeout=40, json={"custom_scep_proxy": {
                             "name": "Metrics_CA", "url": custom_ca.url, "challenge": "m-ch4l"}})
    assert created.status_code == 200, created.text
    # Ten requests over two gunicorn workers: /metrics sums them (PROMETHEUS_MULTIPROC_DIR).
    for _ in range(10):
        assert httpx.get(stack.url("MDM_HTTP_PORT") + "/mdm/enroll", timeout=5).status_code == 403
    # A proxy URL with a code in it: refused by the processor (AuthorizeScep over gRPC).
    host, code = f"HOST-{uuid.uuid4()}", f"code-{uuid.uuid4().hex}"
    proxy_id = f"{host}%2C{uuid.uuid4()}%2CMetrics_CA%2C{code}"
    answer = httpx.get(f"{stack.url('SCEP_PROXY_HTTP_PORT')}/mdm/scep/proxy/{proxy_id}",
                       params={"operation": "GetCACaps"}, timeout=10)
    assert answer.status_code == 404
    # A host with a push token, a command for it over the Commander: a push to an APNs that
    # does not answer.
    push_host = f"PUSH-{uuid.uuid4()}"
    with psycopg.connect(ops["database_url"]) as conn:
        conn.execute("INSERT INTO hosts (uuid, enrolled, push_token, push_magic, topic) "
                     "VALUES (%s, true, %s, 'magic', 'topic')", (push_host, b"\x01" * 32))
    command_uuid = str(uuid.uuid4())
    with stack.channel("MDM_GRPC_PORT", caller="profile-processor") as channel:
        commander_pb2_grpc.CommanderStub(channel).Enqueue(commander_pb2.EnqueueRequest(commands=[
            commander_pb2.HostCommand(host_uuid=push_host, command_uuid=command_uuid,
                                      request_type="ProfileList",
                                      payload=profile_list(command_uuid))]),
            timeout=10)

    def moved(var, metric, **labels):
        return lambda: scrape(ops, var).value(metric, **labels) > before[var].value(metric, **labels)

    wait_for(moved("ADMIN_HTTP_PORT", "mdmscep_http_requests_total", method="POST", status="200",
                   route="/api/v1/fleet/certificate_authorities"), what="admin HTTP count")
    wait_for(moved("SCEP_PROXY_GRPC_METRICS_PORT", "mdmscep_grpc_requests_total", code="OK",
                   method="/mdmscep.v1.ScepGateway/ProbeServer"), what="ProbeServer count")
    wait_for(moved("PROCESSOR_METRICS_PORT", "mdmscep_bus_messages_consumed_total",
                   queue="profile_processor.events"), what="processor consuming config.changed")
    wait_for(moved("PROCESSOR_METRICS_PORT", "mdmscep_reconcile_pass_duration_seconds_count"),
             what="a reconcile pass")
    wait_for(moved("PROCESSOR_METRICS_PORT", "mdmscep_grpc_requests_total", code="OK",
                   method="/mdmscep.v1.ProfileAuthority/AuthorizeScep"), what="AuthorizeScep")
    wait_for(moved("MDM_GRPC_METRICS_PORT", "mdmscep_grpc_requests_total", code="OK",
                   method="/mdmscep.v1.Commander/Enqueue"), what="Enqueue count")
    wait_for(moved("MDM_GRPC_METRICS_PORT", "mdmscep_bus_published_total",
                   routing_key="push.requested"), what="push.requested published")
    wait_for(moved("ADMIN_WORKER_METRICS_PORT", "mdmscep_outbox_published_total",
                   table="admin_config_outbox"), what="config.changed relayed by the worker")
    wait_for(moved("MDM_PUSH_METRICS_PORT", "mdmscep_push_results_total", reason="network_error"),
             timeout=30, what="a failed push counted")
    assert scrape(ops, "MDM_PUSH_METRICS_PORT").value(
        "mdmscep_bus_messages_consumed_total", queue="mdm_endpoint.push_requested") >= 1
    proxy = scrape(ops, "SCEP_PROXY_HTTP_PORT")
    assert proxy.value("mdmscep_http_requests_total", route="/mdm/scep/proxy/<path:raw_id>",
                       method="GET", status="404") >= 1
    # The proxy's own metrics are in the same exposition.
    assert proxy.value("scep_proxy_requests_total", operation="GetCACaps", status="404") >= 1
    mdm = scrape(ops, "MDM_HTTP_PORT")
    assert mdm.value("mdmscep_http_requests_total", route="/mdm/enroll", method="GET",
                     status="403") - before["MDM_HTTP_PORT"].value(
        "mdmscep_http_requests_total", route="/mdm/enroll", method="GET", status="403") == 10
    everything = "".join(scrape(ops, var).text for var in (*HTTP_PORTS, *METRICS_PORTS))
    for secret in (code, host, push_host, "m-ch4l", SERVER_PRIVATE_KEY, ADMIN_TOKEN):
        assert secret not in everything


def test_expiring_credentials_warn_in_health_metrics_logs_and_activities(ops):
    stack = ops["stack"]

    def warnings(var):
        response = httpx.get(stack.url(var) + "/healthz", timeout=5)
        assert response.status_code == 200  # a warning, not an outage
        return response.json()["warnings"]

    [push] = wait_for(lambda: warnings("MDM_HTTP_PORT"), what="mdm-endpoint warning")
    assert (push["kind"], push["name"]) == ("push_certificate", "APNS_CERT")
    assert 4.5 < push["days_left"] <= 5 and "expires in 5 days" in push["message"]
    [custom] = wait_for(lambda: warnings("ADMIN_HTTP_PORT"), what="admin-config warning")
    assert (custom["kind"], custom["name"]) == ("custom_ca", "Expiring_CA")
    assert 9.5 < custom["days_left"] <= 10

    mdm = scrape(ops, "MDM_HTTP_PORT")
    assert 4.5 < mdm.value("mdmscep_credential_expiry_days", kind="push_certificate",
                           name="APNS_CERT") <= 5
    # The long-lived identity CA is measured but raises nothing.
    assert mdm.value("mdmscep_credential_expiry_days", kind="identity_ca",
                     name="Long Lived Identity CA") > 399
    assert 9.5 < scrape(ops, "ADMIN_WORKER_METRICS_PORT").value(
        "mdmscep_credential_expiry_days", kind="custom_ca", name="Expiring_CA") <= 10

    def activities():
        feed = httpx.get(stack.admin_url + "/api/v1/fleet/activities", headers=AUTH,
                         timeout=5).json()["activities"]
        return [a for a in feed if a["type"] == "credential_expiring"]

    # admin-config's worker and two mdm-endpoint workers report: one activity per certificate.
    found = wait_for(lambda: len(activities()) == 2 and activities(), what="two activities")
    time.sleep(1)
    assert len(activities()) == 2
    by_kind = {a["details"]["kind"]: a for a in found}
    assert by_kind["push_certificate"]["details"]["name"] == "APNS_CERT"
    assert by_kind["custom_ca"]["details"]["name"] == "Expiring_CA"
    assert {a["actor"] for a in found} == {"mdmscep"}
    # The reminder stage: within 30 days, within 7 days (then 1 day, expired).
    assert by_kind["custom_ca"]["details"]["stage"] == "30d"
    assert by_kind["push_certificate"]["details"]["stage"] == "7d"
    # The processes' output reaches the stack's log through supervisord a moment after the
    # activity is stored.
    wait_for(lambda: all(text in stack.log() for text in
                         ("credential expiring", "Expiring_CA", "APNS_CERT")),
             what="the expiry warnings in the log")


def test_the_stack_serves_grpc_on_loopback_with_one_certificate_per_process(ops):
    """GRPC_BIND_ADDRESS unset: every gRPC listener on 127.0.0.1, and each program holds its own
    service's certificate and key (tests/security/test_internal_grpc.py: the other address)."""
    stack = ops["stack"]
    for var in GRPC_SERVERS:
        assert listening_addresses(stack.port(var)) == {"127.0.0.1"}, var
    pki = stack.run_dir / "service-pki"
    for program, service in {"admin-config": "admin-config", "scep-proxy-http": "scep-proxy",
                             "scep-proxy-grpc": "scep-proxy", "mdm-endpoint-http": "mdm-endpoint",
                             "mdm-endpoint-grpc": "mdm-endpoint",
                             "mdm-endpoint-push": "mdm-endpoint",
                             "profile-processor": "profile-processor"}.items():
        env = program_environment(stack.pid(program))
        assert env["GRPC_TLS_CA_CERT"] == str(pki / "ca.crt"), program
        assert env["GRPC_TLS_KEY"] == str(pki / service / "tls.key"), program
        certificate = x509.load_pem_x509_certificate(Path(env["GRPC_TLS_CERT"]).read_bytes())
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == service
    # Keys on disk: the four services' own, 0600; the CA's was never written.
    keys = sorted(p.relative_to(pki).as_posix() for p in pki.rglob("*")
                  if p.is_file() and b"PRIVATE KEY" in p.read_bytes())
    assert keys == sorted(f"{s}/tls.key" for s in SERVICES)
    assert all((pki / key).stat().st_mode & 0o777 == 0o600 for key in keys)
    # The real processes enforce the callers too.
    with stack.channel("MDM_GRPC_PORT", caller="admin-config") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            commander_pb2_grpc.CommanderStub(channel).Enqueue(
                commander_pb2.EnqueueRequest(commands=[]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
