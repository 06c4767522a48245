"""Internal gRPC is mutual TLS with per-method callers, on loopback unless told otherwise.

Against real servers: mdm-endpoint's Commander and HostRegistry and the processor's
ProfileAuthority over the session database, scep-proxy's ScepGateway fetching a real HTTP
listener, every one served by GrpcServer with a certificate of the tests' service PKI
(tests/support/service_certs.py). A caller without a certificate from the service CA cannot
complete the handshake; a service calling a method that is not its own gets PERMISSION_DENIED
and the handler never runs (nothing queued, deleted, fetched or used up). The stack `make run`
starts binds gRPC where GRPC_BIND_ADDRESS says (127.0.0.1 by default, with each process given
only its own certificate: checked on tests/common/test_operations_stack.py's stack); a gRPC
service without GRPC_TLS_* does not start.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from mdm_endpoint.commander import Commander, CommanderServicer
from mdm_endpoint.host_registry import HostRegistry, HostRegistryServicer
from mdm_endpoint.store import CommandStore
from mdmscep.v1 import (
    commander_pb2,
    commander_pb2_grpc,
    host_registry_pb2,
    host_registry_pb2_grpc,
    profile_authority_pb2,
    profile_authority_pb2_grpc,
    scep_gateway_pb2,
    scep_gateway_pb2_grpc,
)
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.mdm_commands import PROFILE_LIST, profile_list
from mdmscep_common.one_time_codes import code_sha256
from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox
from mdmscep_common.service_tls import SERVICES
from profile_processor.scep_authorization import ProfileAuthorityServicer, ScepAuthority
from tests.conftest import PG_BASE, RUN_ID, SERVER_PRIVATE_KEY
from tests.support.processor_read_models import copy_owned_rows_to_processor
from tests.support.proxy_world import RecordingCa
from tests.support.service_certs import other_pki_dir, service_tls, tls_env
from tests.support.settings import load_settings
from tests.support.stack import GRPC_SERVERS, listening_addresses, start_stack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"

# The policy, written out here on its own: each internal method and the one service that calls it.
RIGHT_CALLER = {
    "/mdmscep.v1.Commander/Enqueue": "profile-processor",
    "/mdmscep.v1.HostRegistry/DeleteHost": "admin-config",
    "/mdmscep.v1.ScepGateway/ProbeServer": "admin-config",
    "/mdmscep.v1.ProfileAuthority/AuthorizeScep": "scep-proxy",
}
WRONG_CALLS = [(method, caller) for method, right in RIGHT_CALLER.items()
               for caller in SERVICES if caller != right]


class World:
    """The four internal services' gRPC servers, with a host, a SCEP delivery and a one-time
    code of their own in the session database."""

    def __init__(self, database_url: str, amqp_url: str, scep_gateway: str):
        self.db = Database(database_url, max_size=4, name="tests-internal-grpc").open()
        self.events = Outbox(MDM_ENDPOINT_OUTBOX)
        suffix = uuid.uuid4().hex[:10]
        self.host, self.profile, self.ca = f"GRPC-HOST-{suffix}", f"grpc-profile-{suffix}", f"Grpc_{suffix}"
        self.code = f"grpc-code-{suffix}"
        self.ca_server = RecordingCa()
        self.addresses = {"scep-proxy": scep_gateway}
        mdm = GrpcServer(0, ["mdmscep.v1.Commander", "mdmscep.v1.HostRegistry"], HealthChecks({}),
                         tls=service_tls("mdm-endpoint"))
        mdm.add(commander_pb2_grpc.add_CommanderServicer_to_server,
                CommanderServicer(Commander.for_settings(
                    load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY}), self.db,
                    CommandStore(), self.events)))
        mdm.add(host_registry_pb2_grpc.add_HostRegistryServicer_to_server,
                HostRegistryServicer(HostRegistry(self.db, self.events)))
        processor = GrpcServer(0, ["mdmscep.v1.ProfileAuthority"], HealthChecks({}),
                               tls=service_tls("profile-processor"))
        processor.add(profile_authority_pb2_grpc.add_ProfileAuthorityServicer_to_server,
                      ProfileAuthorityServicer(ScepAuthority(self.db)))
        self.servers = [mdm, processor]
        for name, server in (("mdm-endpoint", mdm), ("profile-processor", processor)):
            server.start()
            self.addresses[name] = f"127.0.0.1:{server.port}"
        self.reset()

    def reset(self) -> None:
        """The host enrolled with a pending SCEP delivery and an unused code, and no commands."""
        with self.db.transaction() as conn:
            self._forget(conn)
            conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (self.host,))
            ca_id = conn.execute(
                "INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                "VALUES (%s, %s, '\\x00') RETURNING id", (self.ca, self.ca_server.url)).fetchone()["id"]
            conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                         "VALUES (%s, 'p', %s, 'u', '', '')", (self.profile, f"com.{self.profile}"))
            conn.execute("INSERT INTO profile_certificate_authorities VALUES (%s, %s)",
                         (self.profile, ca_id))
            conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, "
                         "command_uuid) VALUES (%s, %s, %s, 'CMD-1')",
                         (self.host, self.profile, f"com.{self.profile}"))
            conn.execute("INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, "
                         "command_uuid, expires_at) VALUES (%s, %s, %s, %s, 'CMD-1', "
                         "now() + interval '1 hour')",
                         (code_sha256(self.code), self.host, self.profile, self.ca))
            copy_owned_rows_to_processor(conn)
        self.ca_server.requests.clear()

    def _forget(self, conn) -> None:
        conn.execute("DELETE FROM scep_codes WHERE host_uuid = %s", (self.host,))
        conn.execute("DELETE FROM host_profiles WHERE host_uuid = %s", (self.host,))
        conn.execute("DELETE FROM profile_certificate_authorities WHERE profile_uuid = %s",
                     (self.profile,))
        conn.execute("DELETE FROM profiles WHERE uuid = %s", (self.profile,))
        conn.execute("DELETE FROM certificate_authorities WHERE name = %s", (self.ca,))
        conn.execute("DELETE FROM hosts WHERE uuid = %s", (self.host,))  # commands cascade
        copy_owned_rows_to_processor(conn)

    def close(self) -> None:
        for server in self.servers:
            server.stop(grace=0)
        with self.db.transaction() as conn:
            self._forget(conn)
        self.db.close()
        self.ca_server.close()

    # --- what each method would do, and whether it happened ---------------------------------
    def commands(self) -> int:
        with self.db.transaction() as conn:
            return conn.execute("SELECT count(*) AS n FROM commands WHERE host_uuid = %s",
                                (self.host,)).fetchone()["n"]

    def host_exists(self) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("SELECT 1 FROM hosts WHERE uuid = %s",
                                (self.host,)).fetchone() is not None

    def code_used(self) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("SELECT used_at IS NOT NULL AS used FROM scep_codes "
                                "WHERE code_sha256 = %s", (code_sha256(self.code),)).fetchone()["used"]

    def state(self) -> dict:
        return {"commands": self.commands(), "host": self.host_exists(),
                "ca_requests": len(self.ca_server.requests), "code_used": self.code_used()}

    def call(self, method: str, channel: grpc.Channel):
        """Call `method` on `channel` with a request that would change something."""
        if method == "/mdmscep.v1.Commander/Enqueue":
            command_uuid = str(uuid.uuid4())
            return commander_pb2_grpc.CommanderStub(channel).Enqueue(commander_pb2.EnqueueRequest(
                commands=[commander_pb2.HostCommand(
                    host_uuid=self.host, command_uuid=command_uuid, request_type=PROFILE_LIST,
                    payload=profile_list(command_uuid))]), timeout=10)
        if method == "/mdmscep.v1.HostRegistry/DeleteHost":
            return host_registry_pb2_grpc.HostRegistryStub(channel).DeleteHost(
                host_registry_pb2.DeleteHostRequest(host_uuid=self.host), timeout=10)
        if method == "/mdmscep.v1.ScepGateway/ProbeServer":
            return scep_gateway_pb2_grpc.ScepGatewayStub(channel).ProbeServer(
                scep_gateway_pb2.ProbeServerRequest(url=self.ca_server.url), timeout=10)
        return profile_authority_pb2_grpc.ProfileAuthorityStub(channel).AuthorizeScep(
            profile_authority_pb2.AuthorizeScepRequest(
                host_uuid=self.host, profile_uuid=self.profile, ca_name=self.ca,
                one_time_code=self.code, operation="PKIOperation"), timeout=10)


SERVER_OF = {"/mdmscep.v1.Commander/Enqueue": "mdm-endpoint",
             "/mdmscep.v1.HostRegistry/DeleteHost": "mdm-endpoint",
             "/mdmscep.v1.ScepGateway/ProbeServer": "scep-proxy",
             "/mdmscep.v1.ProfileAuthority/AuthorizeScep": "profile-processor"}
UNTOUCHED = {"commands": 0, "host": True, "ca_requests": 0, "code_used": False}


@pytest.fixture(scope="module")
def world(database_url, amqp_url, scep_gateway):
    world = World(database_url, amqp_url, scep_gateway)
    yield world
    world.close()


@pytest.fixture
def fresh(world):
    world.reset()
    return world


def channel_as(world: World, caller: str, server: str) -> grpc.Channel:
    return service_tls(caller).channel(world.addresses[server], server)


def denied_count(method: str) -> float:
    return REGISTRY.get_sample_value("mdmscep_grpc_requests_total",
                                     {"method": method, "code": "PERMISSION_DENIED"}) or 0.0


# --- the handshake: only certificates from the service CA ------------------------------------

def _without_certificate(address: str) -> grpc.Channel:
    ca = service_tls("admin-config").ca_pem
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca),
                               options=[("grpc.ssl_target_name_override", "mdm-endpoint")])


def _other_ca_certificate(address: str) -> grpc.Channel:
    """The profile-processor's name on a certificate from another CA (trusting the real one)."""
    outsider = service_tls("profile-processor", other_pki_dir())
    credentials = grpc.ssl_channel_credentials(root_certificates=service_tls("admin-config").ca_pem,
                                               private_key=outsider.key_pem,
                                               certificate_chain=outsider.cert_pem)
    return grpc.secure_channel(address, credentials,
                               options=[("grpc.ssl_target_name_override", "mdm-endpoint")])


@pytest.mark.parametrize("make_channel", [grpc.insecure_channel, _without_certificate,
                                          _other_ca_certificate],
                         ids=["plaintext", "no-client-certificate", "certificate-of-another-ca"])
def test_a_caller_without_a_service_ca_certificate_cannot_complete_the_handshake(fresh, make_channel):
    with make_channel(fresh.addresses["mdm-endpoint"]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            fresh.call("/mdmscep.v1.Commander/Enqueue", channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fresh.state() == UNTOUCHED


def test_a_client_refuses_a_server_that_is_not_the_service_it_calls(fresh):
    """admin-config means to call scep-proxy, but mdm-endpoint's certificate answers."""
    tls = service_tls("admin-config")
    with tls.channel(fresh.addresses["mdm-endpoint"], "scep-proxy") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


# --- per-method callers -----------------------------------------------------------------------

@pytest.mark.parametrize("method, caller", WRONG_CALLS,
                         ids=[f"{caller}-calls-{method.rsplit('/', 1)[1]}"
                              for method, caller in WRONG_CALLS])
def test_a_service_calling_a_method_that_is_not_its_own_is_refused_and_nothing_happens(
        fresh, method, caller):
    before = denied_count(method)
    with channel_as(fresh, caller, SERVER_OF[method]) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            fresh.call(method, channel)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fresh.ca not in refused.value.details() and fresh.ca_server.url not in refused.value.details()
    assert fresh.state() == UNTOUCHED  # the handler never ran
    assert denied_count(method) == before + 1


def test_each_method_works_for_its_own_caller(fresh):
    def call(method):
        right = RIGHT_CALLER[method]
        with channel_as(fresh, right, SERVER_OF[method]) as channel:
            return fresh.call(method, channel)

    assert call("/mdmscep.v1.ScepGateway/ProbeServer").ok
    assert len(fresh.ca_server.requests) >= 1
    authorized = call("/mdmscep.v1.ProfileAuthority/AuthorizeScep")
    assert authorized.allowed and authorized.upstream_url == fresh.ca_server.url
    assert fresh.code_used()
    assert call("/mdmscep.v1.Commander/Enqueue").queued == 1
    assert fresh.commands() == 1
    assert call("/mdmscep.v1.HostRegistry/DeleteHost").deleted
    assert not fresh.host_exists()


@pytest.mark.parametrize("server", ["mdm-endpoint", "profile-processor", "scep-proxy"])
def test_health_answers_every_service_certificate(world, server):
    for caller in SERVICES:
        with channel_as(world, caller, server) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, caller


def test_the_container_health_check_uses_the_containers_own_certificate(world):
    port = world.addresses["mdm-endpoint"].rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env["MDM_GRPC_PORT"] = port

    def healthcheck(extra):
        return subprocess.run([sys.executable, str(HEALTHCHECK), "mdm-endpoint-grpc"],
                              env={**env, **extra}, capture_output=True, text=True, timeout=30)

    healthy = healthcheck(tls_env("mdm-endpoint"))
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "healthy"), healthy.stderr
    without = healthcheck({})
    assert (without.returncode, without.stdout.strip()) == (1, "unhealthy")
    assert "GRPC_TLS_CA_CERT, GRPC_TLS_CERT, GRPC_TLS_KEY not set" in without.stderr
    outsider = healthcheck(tls_env("mdm-endpoint", other_pki_dir()))
    assert (outsider.returncode, outsider.stdout.strip()) == (1, "unhealthy")


# --- start-up: no gRPC service without its certificate -----------------------------------------

GRPC_COMMANDS = [("admin-config", "serve"), ("scep-proxy", "http"), ("scep-proxy", "grpc"),
                 ("mdm-endpoint", "grpc"), ("profile-processor",)]


def _run_service(command: tuple[str, ...], extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env.update({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                "DATABASE_URL": f"{PG_BASE}/mdmscep_test_{RUN_ID}_never_opened", **extra})
    return subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", GRPC_COMMANDS, ids=[" ".join(c) for c in GRPC_COMMANDS])
def test_a_grpc_service_without_its_certificate_does_not_start(command):
    done = _run_service(command, {})
    assert done.returncode == 78, done.stderr
    assert "configuration error: GRPC_TLS_CA_CERT, GRPC_TLS_CERT, GRPC_TLS_KEY are required" \
        in done.stderr


def test_a_service_given_another_services_certificate_does_not_start():
    done = _run_service(("profile-processor",), tls_env("admin-config"))
    assert done.returncode == 78
    assert "GRPC_TLS_CERT is a certificate for admin-config, not for profile-processor" in done.stderr
    only_key_missing = {k: v for k, v in tls_env("profile-processor").items() if k != "GRPC_TLS_KEY"}
    done = _run_service(("profile-processor",), only_key_missing)
    assert done.returncode == 78
    assert "configuration error: GRPC_TLS_KEY is required" in done.stderr


# --- the launcher's stack: gRPC where GRPC_BIND_ADDRESS says -------------------------------

# (On loopback by default, one certificate per process: tests/common/test_operations_stack.py
# checks it on the stack it starts anyway.)

@pytest.mark.slow
def test_grpc_bind_address_moves_the_stacks_grpc_listeners(base_env, tmp_path):
    stack = start_stack(base_env, tmp_path, GRPC_BIND_ADDRESS="0.0.0.0")
    try:
        stack.wait_healthy(timeout=90)
        for var in GRPC_SERVERS:
            # Every address: gRPC listens on one dual-stack socket for 0.0.0.0 (shown as ::).
            addresses = listening_addresses(stack.port(var))
            assert addresses and all(ipaddress.ip_address(a).is_unspecified for a in addresses), \
                (var, addresses)
    finally:
        stack.stop()


def test_the_launcher_refuses_one_certificate_for_every_program(base_env, tmp_path):
    env = {**os.environ, **base_env, **tls_env("admin-config"),
           "MDMSCEP_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "local" / "launcher.py")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "issues each service its own internal gRPC certificate" in done.stderr
