"""scep-proxy's SQL for what it reports about a CA: its ca_requests rows (written by the http
workers: outcomes, outcome_records.py; busy refusals, limits.py) and the CA's request slots,
held as session advisory locks."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from mdmscep_common.ca_keys import slot_lock_class


@dataclass(frozen=True)
class RequestCounts:
    issued: int
    # Answered otherwise: a refusal, an error, a timeout (refused busy is not an answer).
    failed: int
    refused_busy: int
    # Over the answered requests; None when there were none.
    average_latency_ms: float | None


class CaRequestStore:
    @staticmethod
    def add(conn: psycopg.Connection, rows: list[tuple[str, str, float]]) -> None:
        """(CA name, outcome, latency in ms) rows, in one statement."""
        if rows:
            conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms) "
                         "SELECT * FROM unnest(%s::text[], %s::text[], %s::real[])",
                         tuple(map(list, zip(*rows, strict=True))))

    def counts(self, conn: psycopg.Connection, ca_name: str, window_seconds: int) -> RequestCounts:
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE outcome = 'issued') AS issued,
                      count(*) FILTER (WHERE outcome NOT IN ('issued', 'busy')) AS failed,
                      count(*) FILTER (WHERE outcome = 'busy') AS refused_busy,
                      avg(latency_ms) FILTER (WHERE outcome <> 'busy') AS average_latency_ms
               FROM ca_requests
               WHERE ca_name = %s AND created_at > now() - make_interval(secs => %s)""",
            (ca_name, window_seconds)).fetchone()
        return RequestCounts(**row)

    def slots_held(self, conn: psycopg.Connection, ca_name: str) -> int:
        """Granted slot locks of the CA (class, slot number: objsubid 2) in this database, held by
        any replica's connection."""
        return conn.execute(
            """SELECT count(*) AS n FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND objsubid = 2
                 AND classid = %s::bigint::oid
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
            (slot_lock_class(ca_name) & 0xFFFFFFFF,)).fetchone()["n"]
