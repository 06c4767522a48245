"""scep-proxy entry points: `scep-proxy http` (gunicorn) and `scep-proxy grpc` (ScepGateway)."""

from __future__ import annotations

import argparse

import httpx

from mdmscep.v1 import scep_gateway_pb2_grpc
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import dependency_checks
from mdmscep_common.http import serve_http
from mdmscep_common.logs import configure_logging
from mdmscep_common.settings import load_settings_or_exit

from .app import create_app
from .gateway import ScepGatewayServicer

SERVICE = "scep-proxy"


def upstream_client() -> httpx.Client:
    # Probes and forwarded requests never follow redirects: the admin's URL is the CA.
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False,
                        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))


def run_grpc(settings) -> None:
    configure_logging(f"{SERVICE}-grpc", settings.secret_values())
    db = Database(settings.database_url, max_size=4, name=SERVICE).open()
    client = upstream_client()
    checks = dependency_checks(db, settings.amqp_url)
    server = GrpcServer(settings.scep_proxy_grpc_port, ["mdmscep.v1.ScepGateway"], checks)
    server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server,
               ScepGatewayServicer(client, settings.scep_probe_timeout))
    server.start()

    def stop():
        server.stop()
        client.close()
        db.close()
    run_until_signal(stop)


def run_http(settings) -> None:
    def factory():
        return create_app(settings, Database(settings.database_url, name=SERVICE).open())
    serve_http(factory, settings.scep_proxy_http_port, settings.http_workers,
               settings.http_threads, f"{SERVICE}-http", settings.secret_values())


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__)
    parser.add_argument("role", choices=["http", "grpc"])
    args = parser.parse_args()
    settings = load_settings_or_exit()
    {"http": run_http, "grpc": run_grpc}[args.role](settings)
