"""Readiness checks shared by HTTP `/healthz` and gRPC health: can this process serve now?"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Check = Callable[[], bool]


class HealthChecks:
    """Named yes/no checks, each result cached briefly so probes do not load the dependencies."""

    def __init__(self, checks: dict[str, Check], cache_seconds: float = 2.0):
        self._checks = checks
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._results: dict[str, tuple[float, bool]] = {}

    def run(self) -> dict[str, bool]:
        now = time.monotonic()
        results = {}
        for name, check in self._checks.items():
            with self._lock:
                cached = self._results.get(name)
            if cached and now - cached[0] < self._cache_seconds:
                results[name] = cached[1]
                continue
            ok = bool(check())
            with self._lock:
                self._results[name] = (time.monotonic(), ok)
            results[name] = ok
        return results

    def healthy(self) -> bool:
        return all(self.run().values())


def dependency_checks(db, amqp_url: str) -> HealthChecks:
    """The usual readiness of a service: its database and the broker answer."""
    from .bus import broker_reachable

    return HealthChecks({"database": db.ping, "broker": lambda: broker_reachable(amqp_url)})
