"""Per-client-address limit of refused SCEP requests (answer 429 when used up).

Whoever guesses one-time codes, forges proxy URLs or replays used ones in a loop makes the proxy
ask the profile-processor each time (one gRPC call and a few queries). Each client address
(mdmscep_common.client_address: the peer, or the address X-Forwarded-For names when the peer is
one of TRUSTED_PROXIES) may be refused `burst` times, and once more every `refill` period after
that; beyond, its requests are answered 429 with Retry-After before the processor is asked.
Allowed requests never count, so a host doing its normal GetCACaps / GetCACert / PKIOperation is
never limited, however fast it goes.

The key is the address, not the host id in the URL: that id is whatever the caller writes, and
a limit keyed on it would let anyone who knows a host's UDID hold that host back. Hosts behind
one NAT share a count, so the burst is generous (a host's own refusals are rare: a replayed URL
after its code was used). Behind a load balancer, TRUSTED_PROXIES must name it, or every client
shares the balancer's count.

SharedClientRefusalLimiter (production) counts refusals in PostgreSQL (table
scep_proxy_refusals, mdmscep_common.failure_limits), so every gunicorn worker and replica sees
one count; each process remembers until when it refuses a client, so checking a request costs
no query, and a process learns that a client is over its limit at its own next refusal of it
(a client gets at most one refusal more per process). ClientRefusalLimiter counts in this
process alone: the fallback while the database cannot be written, and what tests without a
database use. Both keep bounded memory (the oldest entries are forgotten first, which only makes
the limit milder).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mdmscep_common.failure_limits import FailureLimit, FailureLimiter

from .errors import TooManyRequests

log = logging.getLogger(__name__)

REFUSAL_BURST = 30
REFUSALS_REFILL_PER_SECOND = 0.5  # one more refusal every 2 s once the burst is spent
MAX_TRACKED_CLIENTS = 50_000
REFUSALS_TABLE = "scep_proxy_refusals"  # migration 0010


def _too_many(retry_after: int, ca_name: str | None) -> TooManyRequests:
    return TooManyRequests("too many refused requests from this address; retry later", ca_name,
                           retry_after=max(1, retry_after))


class ClientRefusalLimiter:
    def __init__(self, burst: int = REFUSAL_BURST,
                 refill_per_second: float = REFUSALS_REFILL_PER_SECOND,
                 max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        self._burst = float(burst)
        self._rate = refill_per_second
        self._max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, client: str, now: float) -> float:
        entry = self._buckets.get(client)
        if entry is None:
            return self._burst
        tokens, at = entry
        return min(self._burst, tokens + (now - at) * self._rate)

    def check(self, client: str, ca_name: str | None = None) -> None:
        """Raise TooManyRequests (429) while this client address has no refusal left."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(client, now)
            if tokens >= self._burst:
                self._buckets.pop(client, None)
                return
            if tokens >= 1:
                return
        raise _too_many(math.ceil((1 - tokens) / self._rate) if self._rate > 0 else 3600,
                        ca_name)

    def refused(self, client: str) -> None:
        """The processor refused a request from this client address: spend one token."""
        with self._lock:
            now = self._clock()
            before = self._tokens(client, now)
            tokens = max(0.0, before - 1)
            self._buckets.pop(client, None)
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        if before >= 1 > tokens:
            log.warning("too many refused SCEP requests from one client address; answering 429 "
                        "for a while", extra={"client": client})

    def tracked(self) -> int:
        with self._lock:
            return len(self._buckets)


class SharedClientRefusalLimiter:
    """Refusals counted in PostgreSQL for every process; 429s decided from memory."""

    def __init__(self, db, burst: int = REFUSAL_BURST,
                 refill_per_second: float = REFUSALS_REFILL_PER_SECOND,
                 max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        self._shared = FailureLimiter(db, REFUSALS_TABLE,
                                      FailureLimit(burst=burst, refill_seconds=1 / refill_per_second))
        self._fallback = ClientRefusalLimiter(burst, refill_per_second, max_clients, clock)
        self._max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._refused_until: OrderedDict[str, float] = OrderedDict()

    def check(self, client: str, ca_name: str | None = None) -> None:
        with self._lock:
            until = self._refused_until.get(client)
            now = self._clock()
            if until is not None and until <= now:
                del self._refused_until[client]
                until = None
        if until is not None:
            raise _too_many(math.ceil(until - now), ca_name)
        self._fallback.check(client, ca_name)

    def refused(self, client: str) -> None:
        try:
            retry_after = self._shared.failed(client)
        except Exception:  # noqa: BLE001 - database down: this process counts on its own
            log.warning("could not count a refused SCEP request in the database; counting it "
                        "in this process", extra={"client": client})
            self._fallback.refused(client)
            return
        if retry_after > 0:
            with self._lock:
                self._refused_until.pop(client, None)
                self._refused_until[client] = self._clock() + retry_after
                while len(self._refused_until) > self._max_clients:
                    self._refused_until.popitem(last=False)

    def tracked(self) -> int:
        with self._lock:
            return len(self._refused_until) + self._fallback.tracked()
