"""The stack as real processes, started with the same launcher as `make run`.

The launcher issues the stack's own service CA and certificates (<run dir>/service-pki); tests
talk gRPC to the stack with those (Stack.channel), as one of its services."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.xmlrpc import SupervisorTransport

from mdmscep_common.service_tls import MDM_ENDPOINT, PROFILE_PROCESSOR, SCEP_PROXY, ServiceTls
from mdmscep_common.settings import SettingsError

from .ports import free_port

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "deploy" / "local" / "launcher.py"

PORT_VARS = ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT", "PROCESSOR_GRPC_PORT",
             "MDM_GRPC_PORT", "SCEP_PROXY_GRPC_PORT")
METRICS_PORT_VARS = ("PROCESSOR_METRICS_PORT", "MDM_GRPC_METRICS_PORT", "MDM_PUSH_METRICS_PORT",
                     "SCEP_PROXY_GRPC_METRICS_PORT", "ADMIN_WORKER_METRICS_PORT")
# gRPC port variable → the service listening there (the name its certificate gives it).
GRPC_SERVERS = {"PROCESSOR_GRPC_PORT": PROFILE_PROCESSOR, "MDM_GRPC_PORT": MDM_ENDPOINT,
                "SCEP_PROXY_GRPC_PORT": SCEP_PROXY}
GRPC_TLS_VARIABLES = ("GRPC_TLS_CA_CERT", "GRPC_TLS_CERT", "GRPC_TLS_KEY")


@dataclass
class Stack:
    env: dict[str, str]
    run_dir: Path
    process: subprocess.Popen = field(repr=False)
    log_path: Path = field(repr=False)

    def port(self, var: str) -> int:
        return int(self.env[var])

    def url(self, var: str) -> str:
        return f"http://127.0.0.1:{self.port(var)}"

    def tls(self, service: str) -> ServiceTls:
        """`service`'s certificate from the stack's own service PKI (issued by the launcher)."""
        pki = self.run_dir / "service-pki"
        return ServiceTls.from_files(service, str(pki / "ca.crt"), str(pki / service / "tls.crt"),
                                     str(pki / service / "tls.key"))

    def channel(self, var: str, caller: str) -> grpc.Channel:
        """A channel to the gRPC server on port `var`, calling as `caller`."""
        return self.tls(caller).channel(f"127.0.0.1:{self.port(var)}", GRPC_SERVERS[var])

    @property
    def admin_url(self) -> str:
        return self.url("ADMIN_HTTP_PORT")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run([str(Path(sys.executable).parent / "supervisorctl"), "-c",
                               str(self.run_dir / "supervisord.conf"), *args],
                              capture_output=True, text=True, timeout=30).stdout

    def pid(self, program: str) -> int:
        return int(self.supervisorctl("pid", program).strip())

    def healthy(self) -> bool:
        for var in ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT"):
            try:
                if httpx.get(self.url(var) + "/healthz", timeout=2).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        try:
            channels = [self.channel(var, PROFILE_PROCESSOR) for var in GRPC_SERVERS]
        except SettingsError:  # the launcher has not issued the certificates yet
            return False
        return all(grpc_serving(channel) for channel in channels)

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"launcher exited with {self.process.returncode}:\n{self.log()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise TimeoutError(f"stack not healthy after {timeout} s:\n{self.log()[-5000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self._stop_programs_at_once()
            self.process.send_signal(signal.SIGINT)  # as Ctrl-C
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


    def _stop_programs_at_once(self) -> None:
        """On SIGINT supervisord stops its programs one after another (about 7 s for the
        stack): each is sent its stop signal now, and SIGINT finds them all on their way out."""
        transport = SupervisorTransport(None, None, f"unix://{self.run_dir / 'supervisor.sock'}")
        try:
            xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport) \
                .supervisor.stopAllProcesses(False)
        except (OSError, xmlrpc.client.Error):
            pass  # supervisord not up (yet): SIGINT alone
        finally:
            transport.close()


def grpc_serving(channel: grpc.Channel) -> bool:
    """grpc.health.v1 says SERVING on `channel` (closed afterwards)."""
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def start_stack(base_env: dict[str, str], workdir: Path, **overrides: str) -> Stack:
    env = {**os.environ, **base_env, "HTTP_WORKERS": "1", "HTTP_THREADS": "8"}
    # Metrics ports too: the defaults (9101-9105) would collide between stacks running at once.
    for var in (*PORT_VARS, *METRICS_PORT_VARS):
        env[var] = str(free_port())
    # The launcher issues each program its own certificate (and refuses GRPC_TLS_* given to it).
    for var in ("PROCESSOR_GRPC_ADDR", "MDM_GRPC_ADDR", "SCEP_PROXY_GRPC_ADDR", *GRPC_TLS_VARIABLES):
        env.pop(var, None)
    env["MDM_PUBLIC_URL"] = f"http://127.0.0.1:{env['MDM_HTTP_PORT']}"
    env["SCEP_PROXY_PUBLIC_URL"] = f"http://127.0.0.1:{env['SCEP_PROXY_HTTP_PORT']}"
    env.update(overrides)
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    env["MDMSCEP_RUN_DIR"] = str(run_dir)
    log_path = workdir / "stack.log"
    # Append mode: supervisord and its programs write to this file through descriptors of their
    # own; without O_APPEND, writes at one descriptor's stale offset overwrite lines of another.
    process = subprocess.Popen([sys.executable, str(LAUNCHER)], env=env, cwd=str(workdir),
                               stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    return Stack(env, run_dir, process, log_path)


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            address = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4)))
            # gRPC may listen on an IPv6 socket for an IPv4 address (::ffff:127.0.0.1).
            found.add(str(getattr(address, "ipv4_mapped", None) or address))
    return found


def program_environment(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
