"""Prometheus metrics of the proxy's HTTP side.

Labels never hold a code, a host or anything from an unauthorized URL: `ca` is set only once the
processor confirmed the CA exists (else ""), `operation` is one of the three SCEP operations (else
"other"). Under gunicorn's several worker processes, set PROMETHEUS_MULTIPROC_DIR to an empty
directory: every worker then writes its values there and `/metrics` sums them (prometheus_client
multiprocess mode); without it each process reports only its own counts.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .scep_protocol import OPERATIONS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def operation_label(operation: str | None) -> str:
    return operation if operation in OPERATIONS else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def reset_multiprocess_dir() -> None:
    """Empty the multiprocess directory before gunicorn starts (prometheus_client's advice), so
    counts of a previous run are not added to this one's."""
    path = multiprocess_dir()
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink(missing_ok=True)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self._registry = registry or CollectorRegistry()
        self.requests = Counter(
            "scep_proxy_requests", "SCEP requests answered, by operation and HTTP status",
            ["operation", "status"], registry=self._registry)
        self.latency = Histogram(
            "scep_proxy_request_duration_seconds", "Time to answer a SCEP request",
            ["ca", "operation"], buckets=LATENCY_BUCKETS, registry=self._registry)
        self.upstream_errors = Counter(
            "scep_proxy_upstream_errors", "CA answers that could not be passed on, by kind "
            "(unreachable, timeout, unreadable, http_status)",
            ["ca", "operation", "kind"], registry=self._registry)
        self.cache = Counter(
            "scep_proxy_ca_answer_cache", "GetCACaps/GetCACert answers served from the cache "
            "(hit) or asked of the CA (miss)", ["operation", "result"], registry=self._registry)

    def observe(self, operation: str | None, ca_label: str, status: int, seconds: float) -> None:
        op = operation_label(operation)
        self.requests.labels(op, str(status)).inc()
        self.latency.labels(ca_label, op).observe(seconds)

    def upstream_error(self, ca_name: str, operation: str, kind: str) -> None:
        self.upstream_errors.labels(ca_name, operation_label(operation), kind).inc()

    def cache_lookup(self, operation: str, hit: bool) -> None:
        self.cache.labels(operation_label(operation), "hit" if hit else "miss").inc()

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_dir():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
