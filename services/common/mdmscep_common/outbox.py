"""Transactional outbox: how every service publishes its events.

A service adds an event in the same transaction as the change it announces (`Outbox.add`); a
relay (`OutboxRelay`, a thread of a background process, never of a gunicorn worker) publishes the
committed rows to RabbitMQ, persistent and with publisher confirms, then marks them published.
So an event goes out if and only if its transaction commits, and a broker outage loses nothing:
the rows wait and the relay retries with backoff. Delivery is at least once (a relay that stops
between the broker's confirm and its own commit publishes those rows again): consumers
deduplicate by event id (mdmscep_common.inbox), which the relay sends as the message_id and as
`event_id` in the body. The body also carries the row's id as `sequence`: a service adds an event
after changing (so locking) the row it announces, so the events of one row are numbered in the
order of its changes, and a consumer keeping a copy of that row applies only a newer one
(mdmscep_common.config_events, the profile-processor's read models).

Several relays may serve one table (replicas): each claims a batch in id order with
FOR UPDATE SKIP LOCKED. NOTIFY on a channel named after the table wakes a relay as soon as a row
commits; a relay also polls every `poll_interval` seconds, in case its listening connection was
down when a notification went out. Published rows are pruned after a day.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

import kombu
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from . import bus, metrics
from .retention import RetentionRule, pruning_task

log = logging.getLogger(__name__)

# One outbox per publishing service, made by its own migrations (<package>/migrations).
ADMIN_CONFIG_OUTBOX = "admin_config_outbox"
MDM_ENDPOINT_OUTBOX = "mdm_endpoint_outbox"
SCEP_PROXY_OUTBOX = "scep_proxy_outbox"
PROFILE_PROCESSOR_OUTBOX = "profile_processor_outbox"
TABLES = (ADMIN_CONFIG_OUTBOX, MDM_ENDPOINT_OUTBOX, SCEP_PROXY_OUTBOX, PROFILE_PROCESSOR_OUTBOX)

PUBLISHED_RETENTION = timedelta(days=1)
PRUNE_BATCH_SIZE = 1000
# Bounds of one relay round: a claimed batch is published within its transaction.
STATEMENT_TIMEOUT = "10s"
LOCK_TIMEOUT = "5s"
LISTEN_CONNECT_TIMEOUT = 5
# How long a wait for a notification may keep stop() waiting.
STOP_CHECK_SECONDS = 0.5


class Events(Protocol):
    """Where a service adds the events of its transaction: an Outbox (tests record them)."""

    def add(self, conn: psycopg.Connection, routing_key: str, body: dict[str, Any]) -> str: ...


def _known(table: str) -> sql.Identifier:
    if table not in TABLES:
        raise ValueError(f"unknown outbox {table!r}")
    return sql.Identifier(table)


class Outbox:
    """A service's outbox table."""

    def __init__(self, table: str):
        self.table = table
        # One round trip: the row, and the notification (sent by PostgreSQL at commit, once per
        # transaction and channel however many rows it adds).
        self._add = sql.SQL(
            "WITH added AS (INSERT INTO {} (event_id, routing_key, body) VALUES (%s, %s, %s) "
            "RETURNING 1) SELECT pg_notify(%s, '') FROM added").format(_known(table))

    def add(self, conn: psycopg.Connection, routing_key: str, body: dict[str, Any]) -> str:
        """Add an event to the transaction `conn` is in; it is published once that transaction
        commits, and never if it rolls back. Returns the event id."""
        event_id = str(uuid.uuid4())
        conn.execute(self._add, (event_id, routing_key, Jsonb(body), self.table))
        return event_id


def published_rule(table: str) -> RetentionRule:
    """Published rows past PUBLISHED_RETENTION (found by the partial index on published_at)."""
    return RetentionRule(table, "published_at < %(cutoff)s", PUBLISHED_RETENTION)


class BrokerUnavailable(Exception):
    """The broker did not take (or confirm) a message; the rows not yet published wait."""


class OutboxRelay:
    """Publishes an outbox's committed events, in a thread of its own (`start`, `stop`).

    `db` is the process's Database (claims, marks, pruning, metrics); `listen_dsn` the database
    URL for the LISTEN connection it keeps open. `declare`: work queues to declare on each
    connection to the broker, for queues whose consumer may not have started yet (a message to a
    queue that does not exist would be dropped by the broker).
    """

    def __init__(self, db, table: str, amqp_url: str, listen_dsn: str, *,
                 declare: Iterable[kombu.Queue] = (), batch_size: int = 100,
                 poll_interval: float = 1.0, min_backoff: float = 0.5, max_backoff: float = 5.0,
                 publish_timeout: float = 5.0, prune_interval: float = 600.0,
                 measure_interval: float = 5.0):
        self.table = table
        ident = _known(table)
        self._db = db
        self._amqp_url = amqp_url
        self._listen_dsn = listen_dsn
        self._declare = list(declare)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._publish_timeout = publish_timeout
        self._measure_interval = measure_interval
        self._claim = sql.SQL(
            "SELECT id, event_id, routing_key, body FROM {} WHERE published_at IS NULL "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED").format(ident)
        self._mark = sql.SQL("UPDATE {} SET published_at = now() WHERE id = ANY(%s)").format(ident)
        self._backlog = sql.SQL(
            "SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
            "AS age FROM {} WHERE published_at IS NULL").format(ident)
        self._pruning = pruning_task(db, [published_rule(table)], prune_interval, PRUNE_BATCH_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._broker: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._listener: psycopg.Connection | None = None
        self._measured_at = float("-inf")
        self._failing: str | None = None  # the dependency of the current outage, logged once

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> OutboxRelay:
        self._pruning.start()
        self._thread = threading.Thread(target=self.run, name=f"relay-{self.table}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._pruning.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Relay until stop(): publish what is waiting, then wait for a notification or the
        next poll; back off while the broker or the database is away."""
        backoff = self._min_backoff
        try:
            while not self._stop.is_set():
                try:
                    published = self.relay_once()
                except BrokerUnavailable as exc:
                    self._unavailable("broker", exc)
                except (psycopg.Error, PoolTimeout) as exc:
                    self._unavailable("database", exc)
                except Exception as exc:  # noqa: BLE001 - the relay must outlive any one round
                    log.exception("outbox relay round failed", extra={"table": self.table})
                    self._unavailable("unknown", exc)
                else:
                    if self._failing is not None:
                        log.info("outbox relay publishing again",
                                 extra={"table": self.table, "after": self._failing})
                        self._failing = None
                    backoff = self._min_backoff
                    self._measure()
                    if published < self._batch_size:
                        self._wait(self._poll_interval)
                    continue
                self._measure()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._close_broker()
            self._close_listener()

    # -- one round ---------------------------------------------------------------------------

    def relay_once(self) -> int:
        """Publish one batch of committed events and mark them published in the same
        transaction; returns how many. Raises BrokerUnavailable after marking those the broker
        did confirm."""
        try:
            # Connected before rows are claimed: no row is locked while the broker is away.
            producer = self._connected_producer()
        except Exception as exc:  # noqa: BLE001 - connection refused, timed out, handshake
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
        published: list[int] = []
        failure: Exception | None = None
        with self._db.transaction() as conn:
            conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            rows = conn.execute(self._claim, (self._batch_size,)).fetchall()
            if not rows:
                return 0
            try:
                for row in rows:
                    self._publish(producer, row)
                    published.append(row["id"])
                    metrics.BUS_PUBLISHED.labels(row["routing_key"]).inc()
            except Exception as exc:  # noqa: BLE001 - whatever the broker did: these rows wait
                failure = exc
                self._close_broker()
            if published:
                conn.execute(self._mark, (published,))
        metrics.OUTBOX_PUBLISHED.labels(self.table).inc(len(published))
        if failure is not None:
            raise BrokerUnavailable(f"{type(failure).__name__}: {failure}"[:300]) from failure
        return len(published)

    def _publish(self, producer: kombu.Producer, row: dict[str, Any]) -> None:
        event_id = str(row["event_id"])
        producer.publish(
            {**row["body"], "event_id": event_id, "sequence": row["id"]}, exchange=bus.EXCHANGE,
            routing_key=row["routing_key"], serializer="json", delivery_mode=2,
            message_id=event_id, retry=False, timeout=self._publish_timeout,
            confirm_timeout=self._publish_timeout)

    def _connected_producer(self) -> kombu.Producer:
        if self._producer is None:
            connection = bus.connection(self._amqp_url)  # confirms; connect timeout
            try:
                connection.ensure_connection(max_retries=0)  # one try: the loop backs off
                for queue in self._declare:
                    bus.declare_queue(connection, queue)
                self._producer = kombu.Producer(connection.channel(), exchange=bus.EXCHANGE)
            except Exception:
                connection.release()
                raise
            self._broker = connection
        return self._producer

    def _unavailable(self, dependency: str, exc: Exception) -> None:
        metrics.OUTBOX_RELAY_FAILURES.labels(self.table, dependency).inc()
        if self._failing is None:
            log.warning("outbox relay cannot publish; events wait and are retried",
                        extra={"table": self.table, "dependency": dependency,
                               "error": str(exc)[:300]})
        self._failing = dependency

    # -- waiting for new rows ----------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Until a row of the table commits (NOTIFY), `timeout` seconds pass, or stop()."""
        listener = self._listening()
        if listener is None:
            self._stop.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                for _ in listener.notifies(timeout=min(remaining, STOP_CHECK_SECONDS),
                                           stop_after=1):
                    return
        except psycopg.Error:
            self._close_listener()  # PostgreSQL restarted: listen again next time
            self._stop.wait(timeout)

    def _listening(self) -> psycopg.Connection | None:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        try:
            conn = psycopg.connect(self._listen_dsn, autocommit=True,
                                   connect_timeout=LISTEN_CONNECT_TIMEOUT,
                                   application_name=f"relay-{self.table}")
        except psycopg.Error:
            return None
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.table)))
        except psycopg.Error:
            conn.close()
            return None
        self._listener = conn
        return conn

    # -- metrics -----------------------------------------------------------------------------

    def _measure(self) -> None:
        now = time.monotonic()
        if now - self._measured_at < self._measure_interval:
            return
        self._measured_at = now
        try:
            with self._db.transaction() as conn:
                conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
                row = conn.execute(self._backlog).fetchone()
        except (psycopg.Error, PoolTimeout):
            return  # the database is away: the gauges keep their last values
        metrics.OUTBOX_UNPUBLISHED.labels(self.table).set(row["n"])
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.labels(self.table).set(float(row["age"]))

    # -- closing -----------------------------------------------------------------------------

    def _close_broker(self) -> None:
        broker, self._broker, self._producer = self._broker, None, None
        if broker is not None:
            try:
                broker.release()
            except Exception:  # noqa: BLE001, S110 - a dead connection is gone either way
                pass

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except psycopg.Error:
                pass
