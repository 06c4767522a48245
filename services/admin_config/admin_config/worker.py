"""`admin-config worker`: admin-config's background process, so the gunicorn workers of
`admin-config serve` only answer requests. It relays the outbox the API writes (config.changed,
delivery.resend) to RabbitMQ and runs the background duties (background_duties.py: custom-CA
expiry checks, retention of activities and of the inbox, the admin_config.events consumer:
credential.expiring, certificates.renewed).
Several replicas may run: the relay claims rows with SKIP LOCKED, the consumer shares its queue.

Like the other processes without HTTP of their own: JSON logs, `/metrics` on
ADMIN_WORKER_METRICS_PORT, and a health check of its database and broker (the container's
healthcheck.py).
"""

from __future__ import annotations

from mdmscep_common import work_queues
from mdmscep_common.db import Database
from mdmscep_common.grpc_server import run_until_signal
from mdmscep_common.logs import configure_logging
from mdmscep_common.metrics import serve_metrics
from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, OutboxRelay

from .background_duties import background
from .settings import AdminConfigSettings


def run_worker(settings: AdminConfigSettings, service: str) -> None:
    configure_logging(f"{service}-worker", settings.secret_values())
    db = Database(settings.database_url, max_size=4, name=f"{service}-worker").open()
    # The processor's queue is declared first: its read models are fed by config.changed, which
    # an admin may cause before the processor ever ran.
    relay = OutboxRelay(db, ADMIN_CONFIG_OUTBOX, settings.amqp_url, settings.database_url,
                        declare=[work_queues.profile_processor_events()],
                        prune_interval=settings.prune_interval).start()
    duties = background(settings, db).start()
    metrics_server = serve_metrics(settings.admin_worker_metrics_port, settings.http_bind_address)

    def stop():
        duties.stop()
        relay.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        db.close()
    run_until_signal(stop)
