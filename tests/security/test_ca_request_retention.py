"""ca_requests (one row per PKIOperation a proxy forwarded or refused busy) cannot grow without
bound: `scep-proxy grpc` prunes rows older than CA_REQUEST_RETENTION_DAYS like the other tables
(mdmscep_common/retention.py), found by an index on their creation time (migration 0010), while
the last hour the admin's statistics read is never touched."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from mdmscep_common.db import Database
from mdmscep_common.retention import Pruner
from mdmscep_common.settings import SettingsError
from scep_proxy.retention import ca_request_pruning, ca_request_rules
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.settings import load_settings


@pytest.fixture
def live_db(database_url):
    db = Database(database_url, max_size=2, name="tests-ca-requests").open()
    yield db
    db.close()


def _insert(db, ca_name: str, ages: dict[str, int]) -> None:
    """`count` rows per age (a PostgreSQL interval) for `ca_name`."""
    with db.transaction() as conn:
        for age, count in ages.items():
            conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms, created_at) "
                         "SELECT %s, 'issued', 5, now() - %s::interval FROM generate_series(1, %s)",
                         (ca_name, age, count))


def _ages(db, ca_name: str) -> dict[str, int]:
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT CASE WHEN created_at > now() - interval '1 hour' THEN 'last hour' "
            "WHEN created_at > now() - interval '1 day' THEN 'today' ELSE 'older' END AS age, "
            "count(*) AS n FROM ca_requests WHERE ca_name = %s GROUP BY 1", (ca_name,)).fetchall()
    return {row["age"]: row["n"] for row in rows}


def test_rows_past_retention_are_pruned_in_batches_and_the_last_hour_kept(live_db):
    ca_name = f"Pruned_{uuid.uuid4().hex[:8]}"
    _insert(live_db, ca_name, {"3 days": 120, "26 hours": 30, "5 hours": 40, "10 minutes": 25})
    try:
        deleted = Pruner(live_db, batch_size=50).prune_all(ca_request_rules(1.0))
        assert deleted["ca_requests"] >= 150
        assert _ages(live_db, ca_name) == {"today": 40, "last hour": 25}
        # A retention shorter than a day still never reaches into the statistics' hour.
        Pruner(live_db).prune_all(ca_request_rules(0.05))
        assert _ages(live_db, ca_name) == {"last hour": 25}
    finally:
        with live_db.transaction() as conn:
            conn.execute("DELETE FROM ca_requests WHERE ca_name = %s", (ca_name,))


def test_scep_proxy_grpc_prunes_on_its_timer(live_db):
    ca_name = f"Timed_{uuid.uuid4().hex[:8]}"
    _insert(live_db, ca_name, {"2 days": 10, "1 minute": 3})
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "CA_REQUEST_RETENTION_DAYS": "1", "PRUNE_INTERVAL": "600"})
    try:
        task = ca_request_pruning(live_db, settings)
        task.run_once()  # what the timer runs every PRUNE_INTERVAL
        assert _ages(live_db, ca_name) == {"last hour": 3}
    finally:
        with live_db.transaction() as conn:
            conn.execute("DELETE FROM ca_requests WHERE ca_name = %s", (ca_name,))


def test_old_rows_are_found_by_their_index(database_url):
    rule = ca_request_rules(1.0)[0]
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            f"EXPLAIN SELECT ctid FROM ca_requests WHERE {rule.condition} LIMIT 5000",
            {"cutoff": rule.cutoff()}).fetchall())
    assert "ca_requests_created_idx" in plan, plan


@pytest.mark.parametrize("value", ["0.01", "-1", "a day"])
def test_a_retention_shorter_than_the_statistics_window_is_refused(value):
    with pytest.raises(SettingsError, match="CA_REQUEST_RETENTION_DAYS"):
        load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                       "CA_REQUEST_RETENTION_DAYS": value})
