"""Per-host-id limit of refused SCEP requests, in this proxy process (answer 429 when used up).

Whoever guesses one-time codes, replays a used proxy URL in a loop, or hammers a host id that is
not pending makes the proxy ask the profile-processor each time (one gRPC call and a few
queries). Each host id gets a bucket of `burst` refusals that refills at `refill_per_second`;
while it is empty, requests naming that host id are answered 429 with Retry-After before the
processor is asked. Allowed requests never spend a token, so a host doing its normal
GetCACaps / GetCACert / PKIOperation is never limited, however fast it goes.

The host id comes from an unauthenticated URL: someone who knows a host's UDID can empty its
bucket and hold its SCEP requests back for as long as they keep going (the host gets its next
attempt with a fresh code). Buckets exist only while not full and are bounded in number (the
oldest is forgotten first, which only makes the limit milder), so random host ids cannot grow
memory. With several gunicorn workers or replicas each process counts on its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .errors import TooManyRequests

log = logging.getLogger(__name__)

REFUSAL_BURST = 20
REFUSALS_REFILL_PER_SECOND = 0.2  # one more refusal every 5 s once the burst is spent
MAX_TRACKED_HOSTS = 50_000


class HostRefusalLimiter:
    def __init__(self, burst: int = REFUSAL_BURST,
                 refill_per_second: float = REFUSALS_REFILL_PER_SECOND,
                 max_hosts: int = MAX_TRACKED_HOSTS, clock: Callable[[], float] = time.monotonic):
        self._burst = float(burst)
        self._rate = refill_per_second
        self._max_hosts = max_hosts
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, host_uuid: str, now: float) -> float:
        entry = self._buckets.get(host_uuid)
        if entry is None:
            return self._burst
        tokens, at = entry
        return min(self._burst, tokens + (now - at) * self._rate)

    def check(self, host_uuid: str, ca_name: str | None = None) -> None:
        """Raise TooManyRequests (429) while this host id has no refusal left."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(host_uuid, now)
            if tokens >= self._burst:
                self._buckets.pop(host_uuid, None)
                return
            if tokens >= 1:
                return
        retry_after = max(1, math.ceil((1 - tokens) / self._rate)) if self._rate > 0 else 3600
        raise TooManyRequests("too many refused requests for this host; retry later", ca_name,
                              retry_after=retry_after)

    def refused(self, host_uuid: str, ca_name: str | None = None) -> None:
        """The processor refused a request naming this host id: spend one token."""
        with self._lock:
            now = self._clock()
            before = self._tokens(host_uuid, now)
            tokens = max(0.0, before - 1)
            self._buckets.pop(host_uuid, None)
            self._buckets[host_uuid] = (tokens, now)
            while len(self._buckets) > self._max_hosts:
                self._buckets.popitem(last=False)
        if before >= 1 > tokens:
            log.warning("too many refused SCEP requests for one host id; answering 429 for a "
                        "while", extra={"host_uuid": host_uuid, "ca": ca_name})

    def tracked(self) -> int:
        with self._lock:
            return len(self._buckets)
