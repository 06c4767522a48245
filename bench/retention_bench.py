"""Benchmark: table sizes under retention over a simulated week — N enrolled hosts verified every
hour (a ProfileList and a CertificateList each, answered), a trickle of one-time SCEP codes and
activities — with each owner's pruning rules run every simulated hour, as the services do.

Time is simulated: each hour's rows are inserted in bulk with that hour's timestamps and the
pruners run with `now` set to it (the same code and SQL the services run, batched deletes of
PRUNE_BATCH_SIZE rows). A plain VACUUM every 6 simulated hours stands in for autovacuum, which in
real time has hours, not seconds, to run. Real PostgreSQL, a throw-away database.

`.venv/bin/python bench/retention_bench.py [--hosts 10000] [--days 7]`
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from admin_config.background_duties import activity_rules
from mdm_endpoint.command_retention import command_rules
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from mdmscep_common.retention import DEFAULT_BATCH_SIZE, Pruner
from profile_processor.scep_code_retention import scep_code_rules

PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
TABLES = ("commands", "scep_codes", "activities")
START = datetime(2026, 1, 5, tzinfo=UTC)


def seed_hosts(conn: psycopg.Connection, hosts: int, offline: int) -> None:
    with conn.cursor().copy("COPY hosts (uuid, serial_number, enrolled) FROM STDIN") as copy:
        for i in range(hosts):
            copy.write_row((f"{'OFF' if i < offline else 'ON'}-{uuid.UUID(int=i + 1)}",
                            f"C02B{i:08d}", True))


def simulate_hour(conn: psycopg.Connection, at: datetime, payload: bytes, result: bytes,
                  codes: int, activities: int) -> int:
    """One hour of traffic; returns the rows inserted."""
    # Verification: ProfileList + CertificateList per host; online hosts answer within seconds,
    # offline ones (uuid OFF-…) never fetch theirs, which stay queued.
    rows = conn.execute(
        """INSERT INTO commands (command_uuid, host_uuid, request_type, payload, status, result,
                                 created_at, delivered_at, completed_at)
           SELECT gen_random_uuid()::text, h.uuid, r.type, %(payload)s,
                  CASE WHEN h.uuid LIKE 'OFF-%%' THEN 'queued' ELSE 'acknowledged' END,
                  CASE WHEN h.uuid LIKE 'OFF-%%' THEN NULL ELSE %(result)s END, %(at)s,
                  CASE WHEN h.uuid LIKE 'OFF-%%' THEN NULL ELSE %(at)s + interval '5 s' END,
                  CASE WHEN h.uuid LIKE 'OFF-%%' THEN NULL ELSE %(at)s + interval '6 s' END
           FROM hosts h CROSS JOIN (VALUES ('ProfileList'), ('CertificateList')) r(type)""",
        {"payload": payload, "result": result, "at": at}).rowcount
    # One-time codes (renewals and retries): valid an hour, most used within minutes.
    rows += conn.execute(
        """INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, command_uuid,
                                   expires_at, used_at, created_at)
           SELECT sha256(gen_random_uuid()::text::bytea), h.uuid, 'profile', 'Test_SCEP',
                  gen_random_uuid()::text, %(at)s + interval '1 hour',
                  CASE WHEN random() < 0.9 THEN %(at)s + interval '5 min' END, %(at)s
           FROM hosts h ORDER BY random() LIMIT %(n)s""", {"at": at, "n": codes}).rowcount
    rows += conn.execute(
        """INSERT INTO activities (type, actor, details, created_at)
           SELECT 'edited_configuration_profile', 'admin', '{"name": "bench"}', %(at)s
           FROM generate_series(1, %(n)s)""", {"at": at, "n": activities}).rowcount
    return rows


def sizes(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    out = {}
    for table in TABLES:
        row = conn.execute(f"SELECT count(*) AS n, pg_total_relation_size('{table}') AS bytes "
                           f"FROM {table}").fetchone()
        out[table] = (row[0], row[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--offline-percent", type=float, default=1.0,
                        help="hosts that never answer (their commands stay queued)")
    parser.add_argument("--result-bytes", type=int, default=400,
                        help="size of a ProfileList/CertificateList answer")
    parser.add_argument("--command-retention-days", type=float, default=2.0)
    parser.add_argument("--code-retention-days", type=float, default=1.0)
    parser.add_argument("--activity-retention-days", type=float, default=365.0)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()

    database_url = f"{PG_BASE}/mdmscep_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    apply_migrations(database_url)
    db = Database(database_url, max_size=2, name="retention-bench").open()
    rules = (command_rules(args.command_retention_days)
             + scep_code_rules(args.code_retention_days)
             + activity_rules(args.activity_retention_days))
    pruner = Pruner(db, batch_size=args.batch_size, max_batches=10_000)
    offline = int(args.hosts * args.offline_percent / 100)
    payload, result = b"p" * 300, os.urandom(args.result_bytes // 2).hex().encode()[:args.result_bytes]
    print(f"# retention over {args.days} simulated days: {args.hosts} hosts, hourly ProfileList + "
          f"CertificateList ({offline} hosts offline), {platform.machine()}, {os.cpu_count()} cores")
    print(f"# retention: commands {args.command_retention_days} d, codes "
          f"{args.code_retention_days} d after expiry, activities {args.activity_retention_days} d; "
          f"batches of {args.batch_size}")
    print(f"{'day':>4} {'commands':>10} {'MB':>7} {'queued':>7} {'codes':>7} {'MB':>5} "
          f"{'activities':>10} {'pruned/day':>11} {'prune s/h avg':>14} {'max':>6}")
    inserted = pruned = 0
    started = time.perf_counter()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            seed_hosts(conn, args.hosts, offline)
            day_pruned, prune_seconds = 0, []
            for hour in range(args.days * 24):
                at = START + timedelta(hours=hour)
                inserted += simulate_hour(conn, at, payload, result, codes=max(1, args.hosts // 50),
                                          activities=5)
                t0 = time.perf_counter()
                day_pruned += sum(pruner.prune_all(rules, now=at + timedelta(hours=1)).values())
                prune_seconds.append(time.perf_counter() - t0)
                if hour % 6 == 5:
                    conn.execute("VACUUM commands, scep_codes, activities")
                if hour % 24 == 23:
                    s = sizes(conn)
                    queued = conn.execute("SELECT count(*) FROM commands "
                                          "WHERE status = 'queued'").fetchone()[0]
                    print(f"{hour // 24 + 1:>4} {s['commands'][0]:>10,} "
                          f"{s['commands'][1] / 2**20:>7.0f} {queued:>7,} {s['scep_codes'][0]:>7,} "
                          f"{s['scep_codes'][1] / 2**20:>5.1f} {s['activities'][0]:>10,} "
                          f"{day_pruned:>11,} {sum(prune_seconds) / len(prune_seconds):>14.3f} "
                          f"{max(prune_seconds):>6.2f}", flush=True)
                    pruned += day_pruned
                    day_pruned, prune_seconds = 0, []
        elapsed = time.perf_counter() - started
        print(f"# {inserted:,} rows inserted, {pruned:,} pruned in {elapsed:.0f} s of wall time; "
              f"without pruning commands would hold {args.hosts * 2 * 24 * args.days:,} rows")
    finally:
        db.close()
        drop_database(database_url)


if __name__ == "__main__":
    main()
