"""profile-processor entry point and composition root: the gRPC ProfileAuthority and
DeliveryDirectory, the bus consumers (config changes and host events into the read models,
command and SCEP results), the reconcile loop, and the relay of the processor's outbox
(certificates.renewed)."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time

from mdmscep.v1 import delivery_directory_pb2_grpc, profile_authority_pb2_grpc
from mdmscep_common import bus, work_queues
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import GrpcServer, run_until_signal
from mdmscep_common.health import dependency_checks
from mdmscep_common.inbox import PROFILE_PROCESSOR_INBOX, Inbox
from mdmscep_common.inbox import retention_rule as inbox_retention_rule
from mdmscep_common.logs import configure_logging
from mdmscep_common.metrics import serve_metrics
from mdmscep_common.outbox import PROFILE_PROCESSOR_OUTBOX, Outbox, OutboxRelay
from mdmscep_common.retention import pruning_task
from mdmscep_common.service_tls import ServiceTls, service_tls_or_exit
from mdmscep_common.settings import load_or_exit

from . import read_models
from .commander_client import CommanderClient
from .delivery import Reconciler
from .delivery_directory import DeliveryDirectory, DeliveryDirectoryServicer
from .reconcile_metrics import observed_pass
from .results import ResultHandler
from .scep_authorization import ProfileAuthorityServicer, ScepAuthority
from .scep_code_retention import scep_code_rules
from .settings import ProfileProcessorSettings
from .store import DeliveryStore

SERVICE = "profile-processor"

log = logging.getLogger(__name__)

# What profile_processor.events brings; the ones after which a reconcile pass runs at once; the
# ones that change the read models who should have which profile is worked out from.
EVENTS = {bus.COMMAND_RESULT, bus.SCEP_RESULT, bus.HOST_CHECKED_OUT, bus.HOST_DELETED,
          bus.DELIVERY_RESEND, bus.CONFIG_CHANGED, bus.HOST_ENROLLED, bus.HOST_FACTS_CHANGED}
STARTS_A_PASS = {bus.COMMAND_RESULT, bus.DELIVERY_RESEND, bus.CONFIG_CHANGED, bus.HOST_ENROLLED,
                 bus.HOST_FACTS_CHANGED}
CHANGES_SCOPES = {bus.CONFIG_CHANGED, bus.HOST_ENROLLED, bus.HOST_FACTS_CHANGED,
                  bus.HOST_CHECKED_OUT, bus.HOST_DELETED}


class ReconcileLoop:
    """Runs reconcile passes: when triggered by an event, when a delivery falls due, and every
    PROFILE_RECONCILE_INTERVAL seconds. A failed pass is logged and retried on the next tick.

    The fleet-wide scope statements (Reconciler.run_pass(scopes=True)) run only when an event
    changed the read models since the last time, and at least every interval (what changed
    otherwise: certificate waits running out; another replica's events are its own passes'):
    a command.result changes no one's scope, and a pass follows each one."""

    def __init__(self, reconciler: Reconciler, interval: float):
        self.reconciler = reconciler
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._scopes_changed = threading.Event()
        self._scopes_at = -math.inf

    def trigger(self) -> None:
        self._wake.set()

    def scopes_changed(self) -> None:
        """Call once the change is committed: the next pass works out the scopes again."""
        self._scopes_changed.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait = self._interval
            scopes = self._scopes_changed.is_set() \
                or time.monotonic() - self._scopes_at >= self._interval
            if scopes:  # cleared first: a change committed during the pass flags the next one
                self._scopes_changed.clear()
                self._scopes_at = time.monotonic()
            try:
                observed_pass(functools.partial(self.reconciler.run_pass, scopes=scopes))
                wait = self.reconciler.seconds_until_due(self._interval)
            except Exception:
                log.exception("reconcile pass failed")
                if scopes:
                    self._scopes_changed.set()
                wait = min(self._interval, 5.0)
            self._wake.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def build(settings: ProfileProcessorSettings,
          db) -> tuple[ReconcileLoop, bus.Worker, ScepAuthority, CommanderClient]:
    store = DeliveryStore()
    commander = CommanderClient(settings.mdm_grpc_addr, ServiceTls.from_settings(settings, SERVICE))
    reconciler = Reconciler(db, store, commander, SecretBox.from_settings(settings),
                            settings.scep_proxy_public_url, settings.scep_code_ttl,
                            settings.profile_verify_interval, settings.profile_renewal_days,
                            settings.certificate_wait, events=Outbox(PROFILE_PROCESSOR_OUTBOX))
    loop = ReconcileLoop(reconciler, settings.profile_reconcile_interval)
    inbox = Inbox(db, PROFILE_PROCESSOR_INBOX)

    def handle(key: str, body, tx) -> None:
        """An event's work, in the transaction that records it in the inbox (`tx`)."""
        results = ResultHandler(tx, store, commander, settings.profile_retry_backoff)
        if key == bus.COMMAND_RESULT:
            results.command_result(body)
        elif key == bus.SCEP_RESULT:
            results.scep_result(body)
        elif key in (bus.HOST_ENROLLED, bus.HOST_CHECKED_OUT, bus.HOST_DELETED,
                     bus.HOST_FACTS_CHANGED):
            with tx.transaction() as conn:
                changed = read_models.apply_host_event(conn, key, body)
            if changed and key in (bus.HOST_CHECKED_OUT, bus.HOST_DELETED):
                results.host_checked_out(body)
        elif key == bus.CONFIG_CHANGED:
            with tx.transaction() as conn:
                read_models.apply_config_change(conn, body)
        elif key == bus.DELIVERY_RESEND:
            results.resend(body)
        # The pass that follows derives the deliveries from the read models.

    def on_event(body, delivery: bus.Delivery) -> None:
        key = delivery.routing_key
        if key not in EVENTS:
            raise bus.PoisonMessage(f"unexpected routing key {key}")
        handled = inbox.handle(body, lambda tx: handle(key, body, tx))
        if handled and key in CHANGES_SCOPES:
            loop.scopes_changed()
        if handled and key in STARTS_A_PASS:
            loop.trigger()  # once committed (after a command.result, a retry may be due)

    queue = work_queues.profile_processor_events()
    worker = bus.Worker(settings.amqp_url, {queue.name: (queue, on_event)}, prefetch=32)
    return loop, worker, ScepAuthority(db), commander


def outbox_relay(settings: ProfileProcessorSettings, db) -> OutboxRelay:
    """The processor's events to RabbitMQ, from a thread of this process. admin-config's queue
    is declared first: certificates.renewed may be published before admin-config ever ran."""
    return OutboxRelay(db, PROFILE_PROCESSOR_OUTBOX, settings.amqp_url, settings.database_url,
                       declare=[work_queues.admin_config_events()],
                       prune_interval=settings.prune_interval)


def main() -> None:
    settings = load_or_exit(ProfileProcessorSettings.from_env)
    tls = service_tls_or_exit(settings, SERVICE)
    configure_logging(SERVICE, settings.secret_values())
    db = Database(settings.database_url, max_size=8, name=SERVICE).open()
    loop, worker, authority, commander = build(settings, db)
    server = GrpcServer(settings.processor_grpc_port,
                        ["mdmscep.v1.ProfileAuthority", "mdmscep.v1.DeliveryDirectory"],
                        dependency_checks(db, settings.amqp_url), tls=tls,
                        host=settings.grpc_bind_address)
    server.add(profile_authority_pb2_grpc.add_ProfileAuthorityServicer_to_server,
               ProfileAuthorityServicer(authority))
    server.add(delivery_directory_pb2_grpc.add_DeliveryDirectoryServicer_to_server,
               DeliveryDirectoryServicer(DeliveryDirectory(db)))
    server.start()
    metrics_server = serve_metrics(settings.processor_metrics_port, settings.http_bind_address)
    pruning = pruning_task(db, [*scep_code_rules(settings.scep_code_retention_days),
                                inbox_retention_rule(PROFILE_PROCESSOR_INBOX)],
                           settings.prune_interval, settings.prune_batch_size).start()
    relay = outbox_relay(settings, db).start()
    threads = [threading.Thread(target=loop.run, name="reconcile"),
               threading.Thread(target=worker.run, name="consumer")]
    for thread in threads:
        thread.start()

    def stop():
        pruning.stop()
        worker.stop()
        loop.stop()
        for thread in threads:
            thread.join(30)
        relay.stop()
        server.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        commander.close()
        db.close()
    run_until_signal(stop)
