"""mdm-endpoint entry points: `mdm-endpoint http` (Apple check-in/commands, gunicorn),
`mdm-endpoint grpc` (Commander, HostRegistry, and the relay of mdm-endpoint's outbox, which both
processes write) and `mdm-endpoint push` (APNs push worker); and `mdm-endpoint rotate-key`
(command payloads under SERVER_PRIVATE_KEY: key_rotation)."""

from __future__ import annotations

import argparse
import logging
import threading

from mdmscep.v1 import commander_pb2_grpc, host_registry_pb2_grpc
from mdmscep_common import bus, work_queues
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import HealthChecks, dependency_checks
from mdmscep_common.http import serve_http
from mdmscep_common.logs import configure_logging
from mdmscep_common.metrics import serve_metrics
from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox, OutboxRelay
from mdmscep_common.retention import PeriodicTask, pruning_task
from mdmscep_common.service_tls import service_tls_or_exit
from mdmscep_common.settings import load_or_exit

from .settings import MdmEndpointSettings

SERVICE = "mdm-endpoint"

log = logging.getLogger(__name__)


def run_http(settings) -> None:
    from .app import create_app
    from .credential_checks import file_credential_monitor

    def factory():
        db = Database(settings.database_url, name=SERVICE).open()
        events = Outbox(MDM_ENDPOINT_OUTBOX)
        # Push certificate and identity CA: checked at start, then every
        # CREDENTIAL_CHECK_INTERVAL, by each worker (each answers /healthz).
        credentials = file_credential_monitor(settings, db, events)
        credentials.periodic_task(settings.credential_check_interval).start()
        # Hosts are served with the database alone: events wait in the outbox for the relay.
        return create_app(settings, db, events, HealthChecks({"database": db.ping}),
                          credentials=credentials)
    serve_http(factory, settings.mdm_http_port, settings.http_workers, settings.mdm_http_threads,
               f"{SERVICE}-http", settings.secret_values(), host=settings.http_bind_address)


def run_grpc(settings) -> None:
    from .commander import Commander, CommanderServicer
    from .host_registry import HostRegistry, HostRegistryServicer
    from .store import CommandStore

    tls = service_tls_or_exit(settings, SERVICE)
    configure_logging(f"{SERVICE}-grpc", settings.secret_values())
    db = Database(settings.database_url, max_size=8, name=SERVICE).open()
    events = Outbox(MDM_ENDPOINT_OUTBOX)
    server = GrpcServer(settings.mdm_grpc_port, ["mdmscep.v1.Commander", "mdmscep.v1.HostRegistry"],
                        dependency_checks(db, settings.amqp_url), tls=tls,
                        host=settings.grpc_bind_address)
    server.add(commander_pb2_grpc.add_CommanderServicer_to_server,
               CommanderServicer(Commander.for_settings(settings, db, CommandStore(), events)))
    server.add(host_registry_pb2_grpc.add_HostRegistryServicer_to_server,
               HostRegistryServicer(HostRegistry(db, events)))
    server.start()
    metrics_server = serve_metrics(settings.mdm_grpc_metrics_port, settings.http_bind_address)
    pruning = command_pruning(settings, db).start()
    facts = fact_refresh(settings, db, events).start()
    relay = outbox_relay(settings, db).start()

    def stop():
        facts.stop()
        pruning.stop()
        server.stop()
        relay.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        db.close()
    run_until_signal(stop)


def outbox_relay(settings, db) -> OutboxRelay:
    """mdm-endpoint's events (the http workers' and the Commander's) to RabbitMQ. It runs here,
    off the check-in path. The queues of its events' consumers are declared first: host events
    (the processor's read model of hosts) and credential.expiring may be published before the
    processor or admin-config ever ran."""
    return OutboxRelay(db, MDM_ENDPOINT_OUTBOX, settings.amqp_url, settings.database_url,
                       declare=[work_queues.profile_processor_events(),
                                work_queues.admin_config_events()],
                       prune_interval=settings.prune_interval)


def command_pruning(settings, db) -> PeriodicTask:
    """Finished commands past COMMAND_RETENTION_DAYS, every PRUNE_INTERVAL, in batches. The
    Commander's process prunes: mdm-endpoint owns commands, and this process is not in the
    check-in path."""
    from .command_retention import command_rules

    return pruning_task(db, command_rules(settings.command_retention_days),
                        settings.prune_interval, settings.prune_batch_size)


def fact_refresh(settings, db, events) -> PeriodicTask:
    """DeviceInformation for enrolled hosts whose facts are HOST_FACTS_INTERVAL old, checked every
    tenth of it (at most hourly): this process owns no check-in path."""
    from .host_facts import FactRefresh, FactRequests
    from .store import CommandStore

    requests = FactRequests(CommandStore(), events, SecretBox.from_settings(settings))
    return FactRefresh(db, requests, settings.host_facts_interval).periodic_task(
        min(settings.host_facts_interval / 10, 3600.0))


def push_worker(settings, db):
    from .push import ApnsClient, PushSender
    from .store import HostStore

    apns = None
    if settings.apns_cert and settings.apns_key:
        apns = ApnsClient(settings.apns_url, settings.apns_cert, settings.apns_key,
                          settings.apns_ca_certs)
    else:
        log.warning("APNS_CERT/APNS_KEY not set: push requests will be dropped")
    sender = PushSender(db, HostStore(), apns)

    def handle(bodies):
        hosts = [h for body in bodies for h in body.get("host_uuids", []) if isinstance(h, str)]
        sender.push_hosts(hosts)

    queue = work_queues.mdm_endpoint_push_requested()
    return bus.BatchWorker(settings.amqp_url, queue, handle, max_batch=200, max_wait=0.1), apns


def run_push(settings) -> None:
    configure_logging(f"{SERVICE}-push", settings.secret_values())
    db = Database(settings.database_url, max_size=4, name=f"{SERVICE}-push").open()
    worker, apns = push_worker(settings, db)
    metrics_server = serve_metrics(settings.mdm_push_metrics_port, settings.http_bind_address)
    thread = threading.Thread(target=worker.run, name="push-worker")
    thread.start()

    def stop():
        worker.stop()
        thread.join(30)
        if metrics_server is not None:
            metrics_server.shutdown()
        if apns:
            apns.close()
        db.close()
    run_until_signal(stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE)
    parser.add_argument("role", choices=["http", "grpc", "push", "rotate-key"],
                        help="a process, or rotate-key: re-encrypt queued command payloads under "
                        "SERVER_PRIVATE_KEY (docs/operations.md)")
    parser.add_argument("--dry-run", action="store_true",
                        help="rotate-key: check every command payload, change nothing")
    args = parser.parse_args()
    # The push worker never encrypts nor decrypts command payloads: it starts without the key.
    settings = load_or_exit(lambda: MdmEndpointSettings.from_env(
        needs_server_private_key=args.role != "push"))
    if args.role == "rotate-key":
        from .key_rotation import main as rotate_key

        raise SystemExit(rotate_key(settings, dry_run=args.dry_run))
    {"http": run_http, "grpc": run_grpc, "push": run_push}[args.role](settings)
