"""Retention: rows past their retention are deleted in small batches by the process that owns the
table (each table has one owner: README.md "Architecture"), on a timer.

Each batch is its own short transaction that deletes at most `batch_size` rows picked with
`FOR UPDATE SKIP LOCKED` (rows a request is working on are left for the next run) and gives up
rather than wait behind a lock, so a hot table is never locked for long. A run stops after
`max_batches`, so one run is bounded too; the next run continues.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from . import metrics

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000
DEFAULT_MAX_BATCHES = 200
# A process prunes this long after it starts (or after PRUNE_INTERVAL when that is shorter), so
# start-up and the first requests are not competing with a large first run.
PRUNE_START_DELAY = 30.0
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "60s"


@dataclass(frozen=True)
class RetentionRule:
    """Rows of `table` matching `condition` (SQL over its columns; `%(cutoff)s` is now minus
    `retention`) are past retention. The condition must never match live rows (a queued
    command, a valid one-time code): it is checked again on every row that is deleted."""

    table: str
    condition: str
    retention: timedelta
    name: str = ""  # for metrics and logs when a table has several rules; default: the table

    @property
    def label(self) -> str:
        return self.name or self.table

    def cutoff(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) - self.retention

    def delete_batch_sql(self) -> str:
        # ctid = ANY(ARRAY(...)) plans as a TID scan: the batch is found by the condition's
        # index and deleted by physical address, in one short statement.
        return (f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {self.table} WHERE {self.condition} "
                f"LIMIT %(batch)s FOR UPDATE SKIP LOCKED)) AND {self.condition}")


class Pruner:
    def __init__(self, db, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_batches: int = DEFAULT_MAX_BATCHES, pause: float = 0.0):
        self._db = db
        self._batch_size = batch_size
        self._max_batches = max_batches
        self._pause = pause

    def prune(self, rule: RetentionRule, now: datetime | None = None) -> int:
        """Delete what `rule` says is past retention at `now` (default: the current time)."""
        started = time.perf_counter()
        params = {"cutoff": rule.cutoff(now), "batch": self._batch_size}
        sql = rule.delete_batch_sql()
        deleted = 0
        for _ in range(self._max_batches):
            try:
                with self._db.transaction() as conn:
                    conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
                    batch = conn.execute(sql, params).rowcount
            except psycopg.errors.LockNotAvailable:
                log.info("pruning paused: rows busy, the next run continues",
                         extra={"table": rule.label})
                break
            deleted += batch
            metrics.PRUNED_ROWS.labels(rule.label).inc(batch)
            if batch < self._batch_size:
                break
            if self._pause:
                time.sleep(self._pause)
        else:
            log.info("pruning run reached its batch limit; the next run continues",
                     extra={"table": rule.label, "deleted": deleted})
        seconds = time.perf_counter() - started
        metrics.PRUNE_DURATION.labels(rule.label).observe(seconds)
        metrics.PRUNE_LAST_SUCCESS.labels(rule.label).set(time.time())
        self._estimate_rows(rule.table)
        if deleted:
            log.info("pruned rows past retention",
                     extra={"table": rule.label, "deleted": deleted,
                            "retention_days": rule.retention.total_seconds() / 86400,
                            "seconds": round(seconds, 3)})
        return deleted

    def prune_all(self, rules: list[RetentionRule], now: datetime | None = None) -> dict[str, int]:
        return {rule.label: self.prune(rule, now) for rule in rules}

    def _estimate_rows(self, table: str) -> None:
        try:
            with self._db.transaction() as conn:
                row = conn.execute("SELECT reltuples::bigint AS n FROM pg_class "
                                   "WHERE oid = to_regclass(%s)", (table,)).fetchone()
            if row is not None:
                metrics.TABLE_ROWS.labels(table).set(max(row["n"], 0))
        except psycopg.Error:
            pass  # a metric is not worth failing the run for


class PeriodicTask:
    """Runs `job` in a daemon thread at start (after `initial_delay`) and then every `interval`
    seconds (with ±10 % jitter so replicas spread out). A failing run is logged; the next one
    comes on schedule."""

    def __init__(self, name: str, interval: float, job: Callable[[], object],
                 initial_delay: float = 0.0):
        self.name = name
        self._interval = interval
        self._job = job
        self._initial_delay = initial_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        try:
            self._job()
        except Exception:  # noqa: BLE001 - a periodic job must survive a bad run
            log.exception("periodic task failed; it runs again on schedule",
                          extra={"task": self.name})

    def _run(self) -> None:
        if self._stop.wait(self._initial_delay):
            return
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._interval * random.uniform(0.9, 1.1))

    def start(self) -> PeriodicTask:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def days(value: float) -> timedelta:
    return timedelta(days=value)


def pruning_task(db, rules: list[RetentionRule], interval: float, batch_size: int) -> PeriodicTask:
    """The owner's pruning timer: every `interval` seconds (PRUNE_INTERVAL), in batches."""
    pruner = Pruner(db, batch_size=batch_size)
    return PeriodicTask("prune", interval, lambda: pruner.prune_all(rules),
                        initial_delay=min(PRUNE_START_DELAY, interval))
