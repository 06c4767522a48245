"""Retention against real PostgreSQL: each owner's rules delete exactly the rows past retention
(never a queued or sent-but-unanswered command, never a valid one-time code), in batches, and
skip rows another transaction holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from admin_config.background_duties import activity_rules, retention_rules
from mdm_endpoint.command_retention import command_rules
from mdmscep_common.db import Database
from mdmscep_common.retention import Pruner
from profile_processor.scep_code_retention import scep_code_rules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def _host(conn) -> str:
    host = f"H-{uuid.uuid4()}"
    conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (host,))
    return host


def _command(conn, host, name, status, created, delivered=None, completed=None):
    conn.execute("INSERT INTO commands (command_uuid, host_uuid, request_type, payload, status, "
                 "created_at, delivered_at, completed_at) VALUES (%s, %s, 'ProfileList', 'x', "
                 "%s, %s, %s, %s)", (f"{host}:{name}", host, status, created, delivered, completed))


def _left(conn, table, column, prefix):
    return {r[column].split(":", 1)[-1] if isinstance(r[column], str) else r[column]
            for r in conn.execute(f"SELECT {column} FROM {table} WHERE {column}::text LIKE %s",
                                  (prefix + "%",)).fetchall()}


def test_finished_commands_past_retention_are_pruned_and_nothing_else(db, db_conn):
    host = _host(db_conn)
    old = NOW - 30 * DAY
    _command(db_conn, host, "ack-3d", "acknowledged", old, old, NOW - 3 * DAY)
    _command(db_conn, host, "error-2d1m", "error", old, old, NOW - 2 * DAY - MINUTE)
    _command(db_conn, host, "format-1d23h", "command_format_error", old, old, NOW - 2 * DAY + MINUTE)
    _command(db_conn, host, "ack-1h", "acknowledged", NOW - 2 * HOUR, NOW - 2 * HOUR, NOW - HOUR)
    _command(db_conn, host, "queued-30d", "queued", old)
    _command(db_conn, host, "sent-unanswered-30d", "queued", old, old)
    _command(db_conn, host, "notnow-30d", "not_now", old, old)
    _command(db_conn, host, "replaced-3d", "replaced", NOW - 3 * DAY)
    _command(db_conn, host, "replaced-1d", "replaced", NOW - DAY)
    before = REGISTRY.get_sample_value("mdmscep_pruned_rows_total", {"table": "commands"}) or 0

    deleted = Pruner(db, batch_size=1).prune_all(command_rules(2.0), now=NOW)

    assert deleted == {"commands": 2, "commands_replaced": 1}
    assert _left(db_conn, "commands", "command_uuid", host) == {
        "format-1d23h", "ack-1h", "queued-30d", "sent-unanswered-30d", "notnow-30d", "replaced-1d"}
    assert REGISTRY.get_sample_value("mdmscep_pruned_rows_total", {"table": "commands"}) == before + 2
    assert REGISTRY.get_sample_value("mdmscep_prune_last_success_timestamp_seconds",
                                     {"table": "commands_replaced"}) > 0


def test_one_time_codes_are_kept_while_valid_and_for_the_retention_after(db, db_conn):
    host = _host(db_conn)
    codes = {  # name: (expires_at, used_at)
        "expired-25h": (NOW - 25 * HOUR, None),
        "used-expired-25h": (NOW - 25 * HOUR, NOW - 25 * HOUR - 10 * MINUTE),
        "expired-23h": (NOW - 23 * HOUR, None),
        "valid": (NOW + HOUR, None),
        "used-recently": (NOW + 30 * MINUTE, NOW - 30 * MINUTE),
    }
    for name, (expires_at, used_at) in codes.items():
        db_conn.execute("INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, "
                        "command_uuid, expires_at, used_at, created_at) VALUES (%s, %s, 'P', 'CA', "
                        "%s, %s, %s, %s)", (name.encode(), host, name, expires_at, used_at,
                                            expires_at - HOUR))

    assert Pruner(db, batch_size=2).prune_all(scep_code_rules(1.0), now=NOW) == {"scep_codes": 2}
    left = {r["command_uuid"] for r in db_conn.execute(
        "SELECT command_uuid FROM scep_codes WHERE host_uuid = %s", (host,)).fetchall()}
    assert left == {"expired-23h", "valid", "used-recently"}


def test_activities_older_than_their_retention_are_pruned(db, db_conn):
    marker = f"ops-{uuid.uuid4()}"
    for age in (366, 365.01, 364.99, 1):
        db_conn.execute("INSERT INTO activities (type, actor, created_at) VALUES (%s, %s, %s)",
                        (marker, str(age), NOW - timedelta(days=age)))
    assert Pruner(db).prune_all(activity_rules(365.0), now=NOW) == {"activities": 2}
    left = [r["actor"] for r in db_conn.execute(
        "SELECT actor FROM activities WHERE type = %s ORDER BY created_at", (marker,)).fetchall()]
    assert left == ["364.99", "1"]


def test_admin_configs_prune_takes_its_inbox_too(db, db_conn):
    """`admin-config prune` and the worker's timer prune the same tables: activities, and the
    event ids admin_config.events' consumer remembers past their retention."""
    db_conn.execute("DELETE FROM admin_config_inbox")
    old, recent = uuid.uuid4(), uuid.uuid4()
    db_conn.execute("INSERT INTO admin_config_inbox (event_id, received_at) VALUES (%s, %s), "
                    "(%s, %s)", (old, NOW - 8 * DAY, recent, NOW - 6 * DAY))
    rules = retention_rules(SimpleNamespace(activity_retention_days=365.0))
    assert {r.table for r in rules} == {"activities", "admin_config_inbox"}
    assert Pruner(db).prune_all(rules, now=NOW).get("admin_config_inbox") == 1
    assert [r["event_id"] for r in db_conn.execute(
        "SELECT event_id FROM admin_config_inbox").fetchall()] == [recent]


def test_pruning_works_in_batches_and_skips_rows_a_transaction_holds(database_url):
    """Committed rows: a row locked by a check-in in progress is left for the next run."""
    pool = Database(database_url, max_size=2, name="tests-retention").open()
    conn = psycopg.connect(database_url, autocommit=True, row_factory=dict_row)
    host = _host(conn)
    try:
        for n in range(12):
            _command(conn, host, f"done-{n:02}", "acknowledged", NOW - 9 * DAY, NOW - 9 * DAY,
                     NOW - 8 * DAY)
        with psycopg.connect(database_url) as busy:
            busy.execute("SELECT 1 FROM commands WHERE command_uuid = %s FOR UPDATE",
                         (f"{host}:done-07",))
            assert Pruner(pool, batch_size=5).prune(command_rules(2.0)[0], now=NOW) == 11
            busy.rollback()
        assert _left(conn, "commands", "command_uuid", host) == {"done-07"}
        assert Pruner(pool, batch_size=5).prune(command_rules(2.0)[0], now=NOW) == 1
    finally:
        conn.execute("DELETE FROM hosts WHERE uuid = %s", (host,))
        conn.close()
        pool.close()
