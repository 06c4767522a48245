"""Per-CA limit of PKIOperation requests in flight in this process (CONTRACT.md §5: 503 when full).

Counters exist only while a CA has requests in flight, so CA names taken from (not yet
authorized) URLs cannot grow memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from .errors import Busy


class CaLimiter:
    def __init__(self, slots_per_ca: int, queue_timeout: float):
        self._slots = slots_per_ca
        self._queue_timeout = queue_timeout
        self._changed = threading.Condition()
        self._in_flight: dict[str, int] = {}

    def in_flight(self, ca_name: str) -> int:
        with self._changed:
            return self._in_flight.get(ca_name, 0)

    @contextlib.contextmanager
    def slot(self, ca_name: str) -> Iterator[None]:
        """Hold one of the CA's slots, waiting up to queue_timeout for one; else Busy."""
        deadline = time.monotonic() + self._queue_timeout
        with self._changed:
            while self._in_flight.get(ca_name, 0) >= self._slots:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Busy(f"{self._slots} requests to this CA are in flight; retry later",
                               ca_name)
                self._changed.wait(remaining)
            self._in_flight[ca_name] = self._in_flight.get(ca_name, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                left = self._in_flight[ca_name] - 1
                if left:
                    self._in_flight[ca_name] = left
                else:
                    del self._in_flight[ca_name]
                self._changed.notify_all()
