"""scep-proxy's outcome records (scep_proxy/outcome_records.py) are written off the host's
request path, against the real database: recording returns while the writer's transaction waits
on PostgreSQL, the outcomes that came meanwhile share one transaction (one xmin), and close
writes what waits. (Through the outbox relay to RabbitMQ: tests/scep_proxy/test_scep_proxy.py,
test_scep_result_reaches_the_bus_through_the_outbox.)"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from mdmscep_common.db import Database
from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, Outbox
from scep_proxy.outcome_records import OutcomeStore
from scep_proxy.outcomes import ScepOutcome
from tests.support.waiting import wait_for


@pytest.fixture
def ca_name(database_url):
    name = f"Outcomes_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ca_requests WHERE ca_name = %s", (name,))
        conn.execute(f"DELETE FROM {SCEP_PROXY_OUTBOX} WHERE body->>'ca_name' = %s", (name,))


@pytest.fixture
def store(database_url):
    db = Database(database_url, max_size=2, name="tests-outcomes").open()
    store = OutcomeStore(db, Outbox(SCEP_PROXY_OUTBOX))
    yield store
    store.close()
    db.close()


def _outcome(n: int, ca_name: str) -> ScepOutcome:
    return ScepOutcome(f"HOST-{n}", "PROFILE", ca_name, "issued", "", 200, "issued")


def _written(database_url: str, ca_name: str) -> tuple[list, list]:
    """(ca_requests rows as (xmin, latency), outbox hosts), in the order written."""
    with psycopg.connect(database_url) as conn:
        requests = conn.execute("SELECT xmin::text, latency_ms FROM ca_requests "
                                "WHERE ca_name = %s ORDER BY id", (ca_name,)).fetchall()
        hosts = [r[0] for r in conn.execute(
            f"SELECT body->>'host_uuid' FROM {SCEP_PROXY_OUTBOX} WHERE body->>'ca_name' = %s "
            "ORDER BY id", (ca_name,)).fetchall()]
    return requests, hosts


def _wait_until_blocked_on(holder, table: str) -> None:
    """Until a session waits for a lock on `table` of this database (pg_locks spans the cluster,
    where other test workers have their own databases)."""
    wait_for(lambda: holder.execute(
        "SELECT 1 FROM pg_locks WHERE relation = %s::regclass AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (table,)).fetchone(), what=f"the writer waiting on PostgreSQL for {table}")


def test_recording_does_not_wait_for_the_database_and_batches_what_came_meanwhile(
        store, ca_name, database_url):
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE ca_requests IN EXCLUSIVE MODE")  # the writer's INSERT waits
        store.record(_outcome(0, ca_name), 12.5)
        _wait_until_blocked_on(holder, "ca_requests")
        store.record(_outcome(1, ca_name), 12.5)  # returns at once all the same
        store.record(_outcome(2, ca_name), 12.5)
        assert _written(database_url, ca_name) == ([], [])
        holder.rollback()  # the lock goes
    store.flush()
    requests, hosts = _written(database_url, ca_name)
    assert hosts == ["HOST-0", "HOST-1", "HOST-2"]
    # The first transaction took the first outcome; the two that came while it waited share
    # the next one.
    xmins = [xmin for xmin, _ in requests]
    assert xmins[0] != xmins[1] == xmins[2]
    assert [latency for _, latency in requests] == [12.5] * 3


def test_close_writes_what_waits(store, ca_name, database_url):
    """close() while the writer is held in a transaction and another outcome waits behind it:
    close waits for both to be written (a close that only stopped the thread would lose the
    second)."""
    with psycopg.connect(database_url) as holder:
        holder.execute(f"LOCK TABLE {SCEP_PROXY_OUTBOX} IN EXCLUSIVE MODE")
        store.record(_outcome(0, ca_name), None)  # never reached the CA: no ca_requests row
        _wait_until_blocked_on(holder, SCEP_PROXY_OUTBOX)
        store.record(_outcome(1, ca_name), None)
        closing = threading.Thread(target=store.close)
        closing.start()
        closing.join(0.5)
        assert closing.is_alive()  # close waits for the writer
        holder.rollback()
    closing.join(10)
    assert not closing.is_alive()
    assert _written(database_url, ca_name) == ([], ["HOST-0", "HOST-1"])
