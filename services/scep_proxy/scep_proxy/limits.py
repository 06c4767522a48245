"""Per-CA limit of PKIOperation requests in flight (503 when full): in this process (CaLimiter) or
across every proxy replica (FleetCaLimiter).

The limit is the CA's max_concurrent_requests, which comes with the request's authorization
(AuthorizeScep reads it with the rest of the CA), so an admin's change applies from the next
request on and the proxy never reads admin-config's tables. `limit` None (a processor that does
not send it) means the proxy's default, SCEP_PROXY_CA_CONCURRENCY.

Counters exist only while a CA has requests in flight, so CA names taken from (not yet
authorized) URLs cannot grow memory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator

import psycopg

from mdmscep_common.ca_keys import slot_lock_class

from .batch_writer import BatchWriter
from .errors import Busy
from .store import CaRequestStore

log = logging.getLogger(__name__)

IDLE_BEFORE_CHECK_SECONDS = 2.0  # a pooled connection idle longer is pinged when taken
MAX_PENDING_OUTCOMES = 10_000
SLOT_WAIT_SLICE = 0.1  # seconds waited for one of several slots before looking at all again
OUTCOMES_PER_WRITE = 500


class CaLimiter:
    """The limit within this process only: FleetCaLimiter's stand-in where there is no database
    (tests, the benchmark)."""

    def __init__(self, default_limit: int, queue_timeout: float):
        self._default = default_limit
        self._queue_timeout = queue_timeout
        self._changed = threading.Condition()
        self._in_flight: dict[str, int] = {}

    def in_flight(self, ca_name: str) -> int:
        with self._changed:
            return self._in_flight.get(ca_name, 0)

    @contextlib.contextmanager
    def slot(self, ca_name: str, limit: int | None) -> Iterator[None]:
        """Hold one of the CA's `limit` slots, waiting up to queue_timeout for one; else Busy."""
        limit = limit or self._default
        deadline = time.monotonic() + self._queue_timeout
        with self._changed:
            while self._in_flight.get(ca_name, 0) >= limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Busy(f"{limit} requests to this CA are in flight; retry later", ca_name)
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

    def record(self, ca_name: str, outcome: str, latency_ms: float) -> None:
        """Statistics are kept by the fleet-wide limiter only."""


class FleetCaLimiter:
    """Per-CA limit of PKIOperation requests in flight across every proxy replica.

    Each in-flight request holds one PostgreSQL session advisory lock (CA class, slot number) on
    a pooled connection for as long as the CA works on it. The CA's `max_concurrent_requests`
    (admin API, sent with each authorization) says how many slots exist: after an admin lowers
    it, requests holding a slot above the new limit finish, and new ones take only the slots
    below it. Nothing to clean up: a replica that dies loses its connections, and PostgreSQL
    releases their locks with them. Requests refused busy are recorded per CA for the admin's
    statistics (answered ones are recorded with their scep.result: outcome_records.py).
    """

    def __init__(self, dsn: str, default_limit: int, queue_timeout: float, max_connections: int):
        from psycopg_pool import ConnectionPool

        # A connection is pinged when taken only after it sat idle for a while (it may have
        # been cut meanwhile); a busy one costs no extra round trip. Should a recently used one
        # turn out broken, slot() checks the pool and takes another (_take).
        self._last_used: dict[int, float] = {}
        self._pool = ConnectionPool(dsn, min_size=0, max_size=max(1, max_connections), open=True,
                                    kwargs={"autocommit": True, "connect_timeout": 5},
                                    check=self._check_if_idle, name="scep-proxy-slots")
        self._default = default_limit
        self._queue_timeout = queue_timeout
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._turns = itertools.count()  # which slot a waiter queues for (itertools: thread-safe)
        # Busy refusals are written off the host's request path, in batches (under overload
        # they come in bursts).
        self._refusals: BatchWriter[tuple[str, str, float]] = BatchWriter(
            "ca-request-outcomes", self._write_refusals, self._refusals_lost,
            MAX_PENDING_OUTCOMES, OUTCOMES_PER_WRITE)

    def _check_if_idle(self, conn) -> None:
        from psycopg_pool import ConnectionPool

        if time.monotonic() - self._last_used.get(id(conn), 0.0) > IDLE_BEFORE_CHECK_SECONDS:
            ConnectionPool.check_connection(conn)

    def _put(self, conn) -> None:
        self._last_used[id(conn)] = time.monotonic()
        self._pool.putconn(conn)

    def in_flight(self, ca_name: str) -> int:
        with self._lock:
            return self._in_flight.get(ca_name, 0)

    @contextlib.contextmanager
    def slot(self, ca_name: str, limit: int | None) -> Iterator[None]:
        """Hold one of the CA's `limit` slots fleet-wide, waiting up to queue_timeout for one;
        else Busy (also while the database is down)."""
        limit = limit or self._default
        deadline = time.monotonic() + self._queue_timeout
        key = slot_lock_class(ca_name)
        try:
            conn = self._pool.getconn(timeout=max(0.1, self._queue_timeout))
        except Exception:  # noqa: BLE001 - PoolTimeout or database down: the same answer
            raise Busy("no connection to take a slot for this CA; retry later", ca_name) from None
        held = None
        try:
            while held is None:
                try:
                    held = self._take_or_wait(conn, key, limit, deadline, ca_name)
                except psycopg.OperationalError:
                    if not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK:
                        raise
                    # Cut since last used (the pool did not ping it): what the check on taking
                    # it would have found. Check the pool, take a working connection.
                    if time.monotonic() >= deadline:
                        raise Busy("no connection to take a slot for this CA; retry later",
                                   ca_name) from None
                    conn = self._replace_broken(conn, ca_name)
            with self._lock:
                self._in_flight[ca_name] = self._in_flight.get(ca_name, 0) + 1
            try:
                yield
            finally:
                with self._lock:
                    left = self._in_flight[ca_name] - 1
                    if left:
                        self._in_flight[ca_name] = left
                    else:
                        del self._in_flight[ca_name]
        finally:
            if held is not None:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, held))
                except Exception:  # noqa: BLE001 - a broken connection released the lock already
                    log.warning("could not release a CA slot; the connection is dropped")
            self._put(conn)

    _TAKE = ("SELECT s FROM generate_series(0, %s - 1) AS s "
             "WHERE pg_try_advisory_lock(%s, s) LIMIT 1")

    def _take_or_wait(self, conn, key: int, limit: int, deadline: float,
                      ca_name: str) -> int | None:
        """A free slot's number; else wait in PostgreSQL's queue for one slot, which wakes the
        waiter the moment the slot is released: a poll would leave the CA idle between a
        release and the next look (a third of a one-slot CA's capacity was lost that way). A
        CA with several slots is waited for a slice at a time, in turn, so a slot freed
        meanwhile is taken on the next look. None: look again; Busy at the deadline."""
        row = conn.execute(self._TAKE, (limit, key)).fetchone()
        if row is not None:
            return row[0]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Busy(f"{limit} requests to this CA are in flight; retry later", ca_name)
        wait = remaining if limit == 1 else min(remaining, SLOT_WAIT_SLICE)
        slot = next(self._turns) % limit
        # lock_timeout 0 would mean no limit: at least 1 ms.
        conn.execute("SELECT set_config('lock_timeout', %s, false)",
                     (f"{max(1, int(wait * 1000))}ms",))
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (key, slot))
        except psycopg.errors.LockNotAvailable:
            return None
        return slot

    def _replace_broken(self, conn, ca_name: str):
        self._pool.putconn(conn)  # broken: the pool drops it
        self._pool.check()  # and any other broken idle one
        try:
            return self._pool.getconn(timeout=max(0.1, self._queue_timeout))
        except Exception:  # noqa: BLE001 - PoolTimeout or database down: the same answer
            raise Busy("no connection to take a slot for this CA; retry later", ca_name) from None

    def record(self, ca_name: str, outcome: str, latency_ms: float) -> None:
        """Queue a request refused busy for the statistics (written within moments, in
        batches)."""
        self._refusals.add((ca_name, outcome, latency_ms))

    def _write_refusals(self, rows: list[tuple[str, str, float]]) -> None:
        with self._pool.connection(timeout=2) as conn:
            CaRequestStore.add(conn, rows)

    @staticmethod
    def _refusals_lost(rows: list[tuple[str, str, float]], reason: str) -> None:
        # Statistics never hold up or break a host's request.
        log.warning("could not record CA request outcomes",
                    extra={"ca": rows[0][0], "count": len(rows), "reason": reason})

    def close(self) -> None:
        self._refusals.close(5)
        self._pool.close()
