"""scep-proxy entry points: `scep-proxy http` (gunicorn) and `scep-proxy grpc` (ScepGateway, and
the relay of the scep.result events the http workers add to scep-proxy's outbox)."""

from __future__ import annotations

import argparse
import math

import httpx

from mdmscep.v1 import scep_gateway_pb2_grpc
from mdmscep_common import work_queues
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import dependency_checks
from mdmscep_common.http import serve_http
from mdmscep_common.logs import configure_logging
from mdmscep_common.metrics import serve_metrics
from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, OutboxRelay
from mdmscep_common.service_tls import service_tls_or_exit
from mdmscep_common.settings import load_or_exit

from .app import create_production_app
from .ca_connections import ca_client
from .ca_request_stats import CaRequestStatistics
from .gateway import ScepGatewayServicer
from .metrics import reset_multiprocess_dir
from .retention import ca_request_pruning
from .settings import ScepProxySettings

SERVICE = "scep-proxy"
# gunicorn's largest bounded request line: a GET PKIOperation carries the whole base64 message
# in its URL (about 3.5 KB for an RSA-2048 request, over gunicorn's default of 4094 with a long id).
MAX_REQUEST_LINE = 8190


def upstream_client() -> httpx.Client:
    # Probes never follow redirects and connect only where a CA may be (ca_connections.py).
    return ca_client(30.0, max_connections=20)


def run_grpc(settings) -> None:
    tls = service_tls_or_exit(settings, SERVICE)
    configure_logging(f"{SERVICE}-grpc", settings.secret_values())
    db = Database(settings.database_url, max_size=4, name=SERVICE).open()
    client = upstream_client()
    checks = dependency_checks(db, settings.amqp_url)
    server = GrpcServer(settings.scep_proxy_grpc_port, ["mdmscep.v1.ScepGateway"], checks,
                        tls=tls, host=settings.grpc_bind_address)
    server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server,
               ScepGatewayServicer(client, settings.scep_probe_timeout,
                                   stats=CaRequestStatistics(db)))
    server.start()
    pruning = ca_request_pruning(db, settings).start()
    # scep.result's consumer queue is declared first: the processor may not have run yet.
    relay = OutboxRelay(db, SCEP_PROXY_OUTBOX, settings.amqp_url, settings.database_url,
                        declare=[work_queues.profile_processor_events()],
                        prune_interval=settings.prune_interval).start()
    metrics_server = serve_metrics(settings.scep_proxy_grpc_metrics_port,
                                   settings.http_bind_address)

    def stop():
        server.stop()
        pruning.stop()
        relay.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        client.close()
        db.close()
    run_until_signal(stop)


def gunicorn_options(settings) -> dict:
    """A proxy spends its time waiting on CAs: gthread workers × threads (HTTP_WORKERS ×
    HTTP_THREADS), and on SIGTERM requests in flight may finish their upstream wait, since a
    PKIOperation cut short has already used its one-time code up."""
    upstream = math.ceil(settings.scep_upstream_timeout)
    return {"timeout": max(60, upstream + 30),
            "graceful_timeout": max(20, upstream + 10),
            "limit_request_line": MAX_REQUEST_LINE}


def run_http(settings) -> None:
    service_tls_or_exit(settings, SERVICE)  # its workers ask AuthorizeScep: fail fast here
    reset_multiprocess_dir()
    serve_http(lambda: create_production_app(settings), settings.scep_proxy_http_port,
               settings.http_workers, settings.http_threads, f"{SERVICE}-http",
               settings.secret_values(), gunicorn_options=gunicorn_options(settings),
               host=settings.http_bind_address)


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__)
    parser.add_argument("role", choices=["http", "grpc"])
    args = parser.parse_args()
    settings = load_or_exit(ScepProxySettings.from_env)
    {"http": run_http, "grpc": run_grpc}[args.role](settings)
