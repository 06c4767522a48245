"""profile-processor entry point: gRPC (ProfileAuthority, health) and, with the profile issue,
the reconcile loop and bus consumers."""

from __future__ import annotations

from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import dependency_checks
from mdmscep_common.logs import configure_logging
from mdmscep_common.settings import load_settings_or_exit

SERVICE = "profile-processor"


def main() -> None:
    settings = load_settings_or_exit()
    configure_logging(SERVICE, settings.secret_values())
    db = Database(settings.database_url, max_size=8, name=SERVICE).open()
    server = GrpcServer(settings.processor_grpc_port, ["mdmscep.v1.ProfileAuthority"],
                        dependency_checks(db, settings.amqp_url))
    server.start()

    def stop():
        server.stop()
        db.close()
    run_until_signal(stop)
