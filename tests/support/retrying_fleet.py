"""A hostsim Fleet whose hosts retry a connection that failed for a transient reason.

A Mac whose MDM server is unreachable, or answers 5xx, tries again later (and at the next push);
hostsim's Fleet polls only when pushed. For fault tests the simulated hosts behave like the Mac:
a poll that ends in a transport error or a 5xx is tried again after 1, 2, 4, 8 and then every
10 seconds (at most `max_retries` times in a row). A 4xx is the server's answer and is not retried.
"""

from __future__ import annotations

import logging
import threading

import httpx

from hostsim.device import MdmRefused, SimulatedHost
from hostsim.fleet import Fleet

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
STEADY_DELAY = 10.0


def transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, MdmRefused) and exc.status >= 500


class RetryingFleet(Fleet):
    def __init__(self, *args, max_retries: int = 30, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_retries = max_retries
        self._failures: dict[str, int] = {}
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self.retries = 0  # polls tried again after a transient failure
        self.transient_failures: list[str] = []

    def wake(self, host: SimulatedHost) -> None:
        if self._closed:
            return
        super().wake(host)

    def _retry_later(self, host: SimulatedHost) -> None:
        with self._lock:
            count = self._failures.get(host.udid, 0) + 1
            self._failures[host.udid] = count
            if count > self.max_retries or self._closed:
                return
            self.retries += 1
            delay = RETRY_DELAYS[count - 1] if count <= len(RETRY_DELAYS) else STEADY_DELAY
            timer = threading.Timer(delay, self._fire, args=(host,))
            timer.daemon = True
            self._timers.add(timer)
        timer.start()

    def _fire(self, host: SimulatedHost) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive()}
        self.wake(host)

    def _poll_failed(self, host: SimulatedHost, exc: Exception) -> None:
        if transient(exc):
            self.transient_failures.append(f"{host.udid}: {exc}")
            self._retry_later(host)
        else:
            super()._poll_failed(host, exc)

    def _poll_succeeded(self, host: SimulatedHost) -> None:
        with self._lock:
            self._failures.pop(host.udid, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        super().close()
