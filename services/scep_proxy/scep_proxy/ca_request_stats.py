"""What the proxy sent a CA over a recent window, and its requests in flight now
(ScepGateway.CaRequestStats; admin-config shows them as the CA's statistics)."""

from __future__ import annotations

from dataclasses import dataclass

from mdmscep_common.proxy_urls import CA_NAME

from .store import CaRequestStore

MAX_WINDOW_SECONDS = 86_400  # a day: what the default CA_REQUEST_RETENTION_DAYS keeps


class InvalidRequest(ValueError):
    """Statistics asked for a name no CA can have, or an unsupported window."""


@dataclass(frozen=True)
class CaStats:
    issued: int
    failed: int
    refused_busy: int
    in_flight: int
    average_latency_ms: float | None


class CaRequestStatistics:
    def __init__(self, db, store: CaRequestStore | None = None):
        self._db = db
        self._store = store or CaRequestStore()

    def of_ca(self, ca_name: str, window_seconds: int) -> CaStats:
        # The names the proxy serves are those its URLs can carry.
        if not CA_NAME.fullmatch(ca_name):
            raise InvalidRequest("ca_name must be a CA name (letters, digits, underscores; "
                                 "at most 255)")
        if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
            raise InvalidRequest(f"window_seconds is 1 to {MAX_WINDOW_SECONDS}")
        with self._db.transaction() as conn:
            counts = self._store.counts(conn, ca_name, window_seconds)
            in_flight = self._store.slots_held(conn, ca_name)
        return CaStats(counts.issued, counts.failed, counts.refused_busy, in_flight,
                       counts.average_latency_ms)
