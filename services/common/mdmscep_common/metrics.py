"""Prometheus metrics shared by every process: HTTP and gRPC calls, the bus, the outboxes and
inboxes, retention, expiring credentials and secrets. Exposed on each HTTP service's
`GET /metrics`, and by the processes without HTTP (gRPC servers, push worker, processor, the
admin-config worker) on a port of their own (`serve_metrics`).

Labels never carry a secret, a one-time code or a host: HTTP routes are Flask URL rules (never the
raw path), gRPC methods are registered method names, queues and tables are fixed names.
Under gunicorn, set PROMETHEUS_MULTIPROC_DIR (one empty directory per service) and `/metrics`
sums the workers (prometheus_client multiprocess mode); otherwise each worker reports its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # Metrics below write their files there as soon as they are defined.
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# -- HTTP (every Flask app, mdmscep_common.http.register_metrics) ------------------------------
HTTP_REQUESTS = Counter("mdmscep_http_requests", "HTTP requests answered, by route (URL rule), "
                        "method and status", ["route", "method", "status"])
HTTP_DURATION = Histogram("mdmscep_http_request_duration_seconds", "Time to answer an HTTP request",
                          ["route", "method"], buckets=LATENCY_BUCKETS)

# -- gRPC (every server, mdmscep_common.grpc_server.MetricsInterceptor) ------------------------
GRPC_REQUESTS = Counter("mdmscep_grpc_requests", "gRPC calls served, by method and status code",
                        ["method", "code"])
GRPC_DURATION = Histogram("mdmscep_grpc_request_duration_seconds", "Time to serve a gRPC call",
                          ["method"], buckets=LATENCY_BUCKETS)

# -- bus (mdmscep_common.bus) -------------------------------------------------------------------
BUS_PUBLISHED = Counter("mdmscep_bus_published", "Messages published (confirmed by the broker)",
                        ["routing_key"])
BUS_CONSUMED = Counter("mdmscep_bus_messages_consumed", "Messages handled and acknowledged",
                       ["queue"])
BUS_FAILED = Counter("mdmscep_bus_messages_failed", "Messages whose handler failed (requeued, or "
                     "dead-lettered once the delivery limit is reached)", ["queue"])
BUS_REDELIVERED = Counter("mdmscep_bus_messages_redelivered", "Messages that arrived again after "
                          "a failure or a lost consumer", ["queue"])
BUS_DEAD_LETTERED = Counter("mdmscep_bus_messages_dead_lettered", "Messages sent to the "
                            "dead-letter queue by a consumer: poison (the handler refused it), "
                            "undecodable, delivery_limit (its last allowed delivery failed)",
                            ["queue", "reason"])
BUS_HANDLER_DURATION = Histogram("mdmscep_bus_handler_duration_seconds", "Time to handle a message "
                                 "(or a batch)", ["queue"], buckets=LATENCY_BUCKETS)
BUS_QUEUE_DEPTH = Gauge("mdmscep_bus_queue_depth", "Messages ready in a queue (passive declare by "
                        "its consumers); <queue>.dlq is the dead-letter queue", ["queue"],
                        multiprocess_mode="livemax")

# -- outbox and inbox (mdmscep_common.outbox, mdmscep_common.inbox) ------------------------------
OUTBOX_UNPUBLISHED = Gauge("mdmscep_outbox_unpublished", "Events committed to an outbox and not "
                           "yet published (measured by its relay)", ["table"],
                           multiprocess_mode="livemax")
OUTBOX_OLDEST_UNPUBLISHED_AGE = Gauge("mdmscep_outbox_oldest_unpublished_age_seconds", "Age of "
                                      "the oldest event of an outbox still to publish (0 when "
                                      "none)", ["table"], multiprocess_mode="livemax")
OUTBOX_PUBLISHED = Counter("mdmscep_outbox_published", "Events of an outbox published and "
                           "confirmed by the broker", ["table"])
OUTBOX_RELAY_FAILURES = Counter("mdmscep_outbox_relay_failures", "Relay rounds that stopped "
                                "because the broker or the database was unavailable (the rows "
                                "wait; retried with backoff)", ["table", "dependency"])
INBOX_DUPLICATES = Counter("mdmscep_inbox_duplicates", "Messages whose event a consumer had "
                           "already handled (acknowledged without handling them again)",
                           ["table"])

# -- retention (mdmscep_common.retention) -------------------------------------------------------
PRUNED_ROWS = Counter("mdmscep_pruned_rows", "Rows deleted because they were past retention",
                      ["table"])
PRUNE_DURATION = Histogram("mdmscep_prune_duration_seconds", "Time of one pruning run of a table",
                           ["table"], buckets=PASS_BUCKETS)
PRUNE_LAST_SUCCESS = Gauge("mdmscep_prune_last_success_timestamp_seconds", "When pruning of a "
                           "table last completed", ["table"], multiprocess_mode="max")
TABLE_ROWS = Gauge("mdmscep_table_rows_estimate", "PostgreSQL's estimate of a pruned table's rows "
                   "(pg_class.reltuples, after the last pruning run)", ["table"],
                   multiprocess_mode="mostrecent")

# -- expiring credentials (mdmscep_common.credentials) ------------------------------------------
CREDENTIAL_EXPIRY_DAYS = Gauge("mdmscep_credential_expiry_days", "Days until a certificate "
                               "expires (negative once expired), by kind (push_certificate, "
                               "identity_ca, custom_ca) and name", ["kind", "name"],
                               multiprocess_mode="livemin")
CREDENTIAL_CHECK_FAILURES = Counter("mdmscep_credential_check_failures", "Credential checks that "
                                    "could not read a certificate", ["kind"])

# -- secrets (mdmscep_common.crypto) ------------------------------------------------------------
SECRETS_OPENED_WITH_PREVIOUS_KEY = Counter(
    "mdmscep_secrets_opened_with_previous_key", "Secrets that opened only with "
    "SERVER_PRIVATE_KEY_PREVIOUS, or in the format before key derivation (run admin-config "
    "rotate-key and mdm-endpoint rotate-key)")


class Exposition(Protocol):
    """Anything with its own registry that renders itself (scep-proxy's ProxyMetrics)."""

    def exposition(self) -> tuple[bytes, str]: ...


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def reset_multiprocess_dir() -> None:
    """Empty the multiprocess directory before gunicorn forks (prometheus_client's advice), so a
    previous run's counts are not added to this one's."""
    path = multiprocess_dir()
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink(missing_ok=True)


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit: drop a dead worker's live gauges (multiprocess mode only)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def exposition(extra: Iterable[Exposition] = ()) -> tuple[bytes, str]:
    """The text exposition of this process (or, in multiprocess mode, of every worker)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # reads every metric of every worker, extras included
        return generate_latest(registry), CONTENT_TYPE_LATEST
    parts = [generate_latest(REGISTRY)] + [item.exposition()[0] for item in extra]
    return b"".join(parts), CONTENT_TYPE_LATEST


def serve_metrics(port: int, host: str = "0.0.0.0"):
    """Serve `/metrics` of a process without HTTP of its own (gRPC servers, push worker,
    processor) on `port` (0 = off). A port already in use costs the metrics, not the service:
    logged as an error and the process goes on. Returns the server (call .shutdown()) or None."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics port unavailable; this process serves no /metrics",
                  extra={"port": port, "error": str(exc)})
        return None
    log.info("metrics served", extra={"port": port})
    return server
