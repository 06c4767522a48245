"""Consumers' inboxes: each event is handled once, however often it is delivered.

The outbox relays publish at least once (mdmscep_common.outbox), and RabbitMQ redelivers what a
lost consumer had not acknowledged. A consumer records the event id in its inbox table in the
same transaction as its work: a second delivery finds the id there and is acknowledged without
being handled again; work that rolls back leaves no id, so the redelivery is handled. A message
without an event id (from a publisher before the outboxes) is handled as it always was.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from . import metrics
from .bus import PoisonMessage
from .db import SingleConnectionDatabase
from .retention import RetentionRule

log = logging.getLogger(__name__)

# One inbox per consuming service, made by its own migrations (<package>/migrations).
PROFILE_PROCESSOR_INBOX = "profile_processor_inbox"
ADMIN_CONFIG_INBOX = "admin_config_inbox"
TABLES = (PROFILE_PROCESSOR_INBOX, ADMIN_CONFIG_INBOX)

# Far longer than any redelivery: the relays republish within minutes, RabbitMQ at once.
RETENTION = timedelta(days=7)


def _known(table: str) -> sql.Identifier:
    if table not in TABLES:
        raise ValueError(f"unknown inbox {table!r}")
    return sql.Identifier(table)


def event_id_of(body: dict[str, Any]) -> str | None:
    """The event id the relay put in the body; None for a message published without one."""
    raw = body.get("event_id")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise PoisonMessage("event_id is not a UUID")
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise PoisonMessage("event_id is not a UUID") from None


def first_delivery(conn: psycopg.Connection, table: str, event_id: str) -> bool:
    """Record the event as handled in the transaction `conn` is in; False if it already was (by
    a committed transaction, or by one still open, which this waits for)."""
    return conn.execute(
        sql.SQL("INSERT INTO {} (event_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            _known(table)), (event_id,)).rowcount == 1


def retention_rule(table: str) -> RetentionRule:
    return RetentionRule(table, "received_at < %(cutoff)s", RETENTION)


class Inbox:
    """A consumer's inbox table over its Database."""

    def __init__(self, db, table: str):
        _known(table)
        self._db = db
        self.table = table

    def handle(self, body: dict[str, Any], work: Callable[[Any], None]) -> bool:
        """Run `work` unless this event was handled before; returns whether it ran. `work` gets
        a Database bound to the transaction that records the event id: its own transactions
        become savepoints of it, so the work and the record commit together."""
        event_id = event_id_of(body)
        if event_id is None:
            work(self._db)
            return True
        with self._db.transaction() as conn:
            if not first_delivery(conn, self.table, event_id):
                metrics.INBOX_DUPLICATES.labels(self.table).inc()
                log.info("event handled before; acknowledged again",
                         extra={"inbox": self.table, "event_id": event_id})
                return False
            work(SingleConnectionDatabase(conn))
        return True
