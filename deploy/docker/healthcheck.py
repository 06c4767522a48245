"""Container health check of one mdmscep process: `python healthcheck.py ROLE` exits 0 when healthy.

Copied into every service image as /opt/mdmscep/healthcheck.py and used by the images' HEALTHCHECK
and by docker-compose.yml. HTTP roles ask `GET /healthz`, gRPC roles ask grpc.health.v1.Health, and
the workers without a port (the push worker, admin-config's worker) check that their database and
broker answer. Kubernetes uses its native
httpGet probes instead; its native grpc probe speaks no TLS, so gRPC roles need this script there
too (internal gRPC is mutual TLS only).

A gRPC role asks its own server with the container's own certificate (GRPC_TLS_*), on
GRPC_BIND_ADDRESS (loopback when it listens on every address).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4

# role → (kind, port variable, default port): the same names and defaults as the services' settings.
ROLES = {
    "admin-config": ("http", "ADMIN_HTTP_PORT", 8080),
    "mdm-endpoint-http": ("http", "MDM_HTTP_PORT", 8081),
    "scep-proxy-http": ("http", "SCEP_PROXY_HTTP_PORT", 8082),
    "profile-processor": ("grpc", "PROCESSOR_GRPC_PORT", 50051),
    "mdm-endpoint-grpc": ("grpc", "MDM_GRPC_PORT", 50052),
    "scep-proxy-grpc": ("grpc", "SCEP_PROXY_GRPC_PORT", 50053),
    "mdm-endpoint-push": ("deps", "", 0),
    "admin-config-worker": ("deps", "", 0),
}
# gRPC role → the service identity its server's certificate names.
GRPC_SERVICES = {"profile-processor": "profile-processor", "mdm-endpoint-grpc": "mdm-endpoint",
                 "scep-proxy-grpc": "scep-proxy"}


def check_http(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",  # noqa: S310 - fixed URL
                                    timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def grpc_health_address(port: int) -> str:
    """Where this container's gRPC server answers: GRPC_BIND_ADDRESS, or loopback when that
    is every address (0.0.0.0, ::) or unset."""
    import ipaddress

    bind = os.environ.get("GRPC_BIND_ADDRESS") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return f"127.0.0.1:{port}"
    if address.is_unspecified:
        return f"127.0.0.1:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def check_grpc(role: str, port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from mdmscep_common.service_tls import TLS_VARIABLES, ServiceTls
    from mdmscep_common.settings import SettingsError

    service = GRPC_SERVICES[role]
    paths = {name: os.environ.get(name) for name in TLS_VARIABLES}
    try:
        missing = [name for name, path in paths.items() if not path]
        if missing:
            raise SettingsError(f"{', '.join(missing)} not set")
        tls = ServiceTls.from_files(service, *paths.values())
    except SettingsError as exc:
        print(f"internal gRPC certificate: {exc}", file=sys.stderr)
        return False
    with tls.channel(grpc_health_address(port), service) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def check_dependencies() -> bool:
    """A process without a port is ready when what it works with answers."""
    import psycopg

    from mdmscep_common.bus import broker_reachable
    from mdmscep_common.settings import CommonSettings, SettingsError

    try:
        settings = CommonSettings.from_env()  # the URLs only: every service has them
    except SettingsError:
        return False
    try:
        with psycopg.connect(settings.database_url, connect_timeout=TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return broker_reachable(settings.amqp_url, timeout=TIMEOUT_SECONDS)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: healthcheck.py {{{'|'.join(ROLES)}}}", file=sys.stderr)
        return 2
    kind, port_variable, default_port = ROLES[argv[0]]
    if kind == "deps":
        healthy = check_dependencies()
    else:
        port = int(os.environ.get(port_variable) or default_port)
        healthy = check_http(port) if kind == "http" else check_grpc(argv[0], port)
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
