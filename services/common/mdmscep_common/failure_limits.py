"""Failed authentication attempts per client address, counted in PostgreSQL.

Each client has a count of recent failures that decays by one every `refill_seconds`; a client
whose count is over `burst` is refused (429 with Retry-After) until it has decayed. The counts
live in a table of the owning service (migration 0011), so every gunicorn worker and every
replica sees the same count: a client cannot multiply its guesses by the number of processes.

An IPv6 client is counted by its /64 network: one host usually holds a whole /64 and could
otherwise take a fresh address for every guess.

Recording a failure is one statement: an atomic upsert of the client's row that also deletes a
few rows of clients whose count has decayed to nothing, so the table holds only clients that
failed recently. Times are the database's, one clock for all replicas. The count is capped, so
a client that keeps failing waits at most `(cap - burst + 1) * refill_seconds` once it stops.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass

from psycopg import sql

log = logging.getLogger(__name__)

# Stale rows deleted by each recorded failure: more than the one row it may add, so rows of
# clients that stopped failing never pile up.
PRUNE_PER_FAILURE = 16
# Floating-point slack when comparing a decayed count with the limit.
_EPSILON = 1e-9
IPV6_CLIENT_PREFIX = 64


def limited_client(client: str) -> str:
    """The key failures of `client` (an address from client_address) are counted under."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return client


@dataclass(frozen=True)
class FailureLimit:
    """`burst` failures in a row are answered as usual; one more is allowed every
    `refill_seconds` after that. The count stops growing at `cap_factor * burst`."""

    burst: int = 10
    refill_seconds: float = 6.0
    cap_factor: int = 2

    @property
    def cap(self) -> float:
        return float(self.burst * self.cap_factor)

    def retry_after(self, failures: float, allowed: float) -> int:
        """Seconds until `failures` has decayed to `allowed` (0 when it already has)."""
        excess = failures - allowed
        if excess <= _EPSILON:
            return 0
        return max(1, math.ceil(excess * self.refill_seconds - _EPSILON))


_DECAYED = ("GREATEST(0, {failures} - EXTRACT(EPOCH FROM now() - {updated_at})::float8"
            " / %(refill)s::float8)")


class FailureLimiter:
    """Failures per client in `table` (client text PRIMARY KEY, failures float8, updated_at
    timestamptz; see migration 0011). `db` is a mdmscep_common.db.Database."""

    def __init__(self, db, table: str, limit: FailureLimit | None = None):
        self._db = db
        self._limit = limit or FailureLimit()
        self._name = table
        self._table = sql.Identifier(table)
        self._read = sql.SQL("SELECT " + _DECAYED.format(failures="failures",
                                                         updated_at="updated_at")
                             + " AS failures FROM {table} WHERE client = %(client)s").format(
            table=self._table)
        stale = sql.SQL("updated_at < now() - make_interval(secs => %(idle)s::float8) "
                        "AND client <> %(client)s")
        self._record = sql.SQL(
            "WITH pruned AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM {table} WHERE {stale} LIMIT %(prune)s FOR UPDATE SKIP LOCKED))"
            " AND {stale}) "
            "INSERT INTO {table} AS f (client, failures, updated_at) "
            "VALUES (%(client)s, 1, now()) "
            "ON CONFLICT (client) DO UPDATE SET failures = LEAST(%(cap)s::float8, "
            + _DECAYED.format(failures="f.failures", updated_at="f.updated_at")
            + " + 1), updated_at = now() RETURNING failures").format(
            table=self._table, stale=stale)

    def _params(self, client: str) -> dict:
        limit = self._limit
        return {"client": limited_client(client), "refill": limit.refill_seconds, "cap": limit.cap,
                "idle": limit.cap * limit.refill_seconds, "prune": PRUNE_PER_FAILURE}

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before its next failure is answered as usual; 0 when
        it may try now. For checks that must refuse before looking at what was sent."""
        with self._db.transaction() as conn:
            row = conn.execute(self._read, self._params(client)).fetchone()
        if row is None:
            return 0
        return self._limit.retry_after(row["failures"], self._limit.burst - 1)

    def failed(self, client: str) -> int:
        """Count one failure of `client`. Returns 0 while the client is within its limit, else
        the seconds until a failure of its would be within the limit again (answer 429)."""
        with self._db.transaction() as conn:
            failures = conn.execute(self._record, self._params(client)).fetchone()["failures"]
        burst = self._limit.burst
        if failures <= burst + _EPSILON:
            return 0
        if failures <= burst + 1 + _EPSILON:  # this failure crossed the limit: say so once
            log.warning("client over its limit of failed authentication; refusing its failures "
                        "for a while", extra={"client": client, "table": self._name})
        return self._limit.retry_after(failures, burst - 1)
