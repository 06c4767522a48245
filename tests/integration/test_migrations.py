"""Migrations: ordered, idempotent, and safe when several replicas start at once."""

from concurrent.futures import ThreadPoolExecutor

import psycopg

from mdmscep_common.db import drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations, migrations_dir
from tests.conftest import PG_BASE, RUN_ID


def test_concurrent_replicas_apply_each_migration_once():
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_migr"
    drop_database(url)
    try:
        with ThreadPoolExecutor(6) as pool:
            created = list(pool.map(lambda _: ensure_database(url), range(6)))
            results = list(pool.map(lambda _: apply_migrations(url), range(6)))
        assert created.count(True) == 1
        expected = sorted(p.stem for p in __import__("pathlib").Path(migrations_dir()).glob("*.sql"))
        assert sorted(r for result in results for r in result) == expected
        assert sum(1 for r in results if r) == 1
        assert apply_migrations(url) == []
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM certificate_authorities").fetchone() == (0,)
    finally:
        drop_database(url)
