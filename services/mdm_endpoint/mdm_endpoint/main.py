"""mdm-endpoint entry points: `mdm-endpoint http` (gunicorn) and `mdm-endpoint grpc` (Commander).
The MDM protocol arrives with the MDM endpoint issue; until then both serve health."""

from __future__ import annotations

import argparse

from flask import Flask

from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import dependency_checks
from mdmscep_common.http import register_healthz, serve_http
from mdmscep_common.logs import configure_logging
from mdmscep_common.settings import load_settings_or_exit

SERVICE = "mdm-endpoint"


def create_app(settings) -> Flask:
    app = Flask("mdm_endpoint")
    db = Database(settings.database_url, name=SERVICE).open()
    register_healthz(app, dependency_checks(db, settings.amqp_url))
    return app


def run_http(settings) -> None:
    serve_http(lambda: create_app(settings), settings.mdm_http_port, settings.http_workers,
               settings.http_threads, f"{SERVICE}-http", settings.secret_values())


def run_grpc(settings) -> None:
    configure_logging(f"{SERVICE}-grpc", settings.secret_values())
    db = Database(settings.database_url, max_size=4, name=SERVICE).open()
    server = GrpcServer(settings.mdm_grpc_port, ["mdmscep.v1.Commander"],
                        dependency_checks(db, settings.amqp_url))
    server.start()

    def stop():
        server.stop()
        db.close()
    run_until_signal(stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE)
    parser.add_argument("role", choices=["http", "grpc"])
    args = parser.parse_args()
    settings = load_settings_or_exit()
    {"http": run_http, "grpc": run_grpc}[args.role](settings)
