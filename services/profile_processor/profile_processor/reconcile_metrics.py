"""Reconcile passes as operators watch them: how long each took, which failed, and what they did
to host-profiles (served on PROCESSOR_METRICS_PORT)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from mdmscep_common.metrics import PASS_BUCKETS

RECONCILE_DURATION = Histogram("mdmscep_reconcile_pass_duration_seconds",
                               "Time of one reconcile pass (all batches)", buckets=PASS_BUCKETS)
RECONCILE_FAILURES = Counter("mdmscep_reconcile_pass_failures", "Reconcile passes that failed "
                             "(retried on the next tick)")
RECONCILE_HOST_PROFILES = Counter(
    "mdmscep_reconcile_host_profiles", "Host-profiles handled by reconcile passes, by action "
    "(added, sent, changed, removed, dropped, renewals, verify_requests, ...)", ["action"])


def observed_pass(run_pass: Callable[[], dict[str, int]]) -> dict[str, int]:
    """Run one reconcile pass, timing it and counting what it handled."""
    started = time.perf_counter()
    try:
        counts = run_pass()
    except Exception:
        RECONCILE_FAILURES.inc()
        raise
    finally:
        RECONCILE_DURATION.observe(time.perf_counter() - started)
    for action, count in counts.items():
        if count:
            RECONCILE_HOST_PROFILES.labels(action).inc(count)
    return counts
