"""Migrations: ordered, idempotent, and safe when several replicas start at once."""

from concurrent.futures import ThreadPoolExecutor

import psycopg

from mdmscep_common.db import drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations, migrations_dir, service_migrations_dirs
from tests.conftest import PG_BASE, RUN_ID


def test_concurrent_replicas_apply_each_migration_once():
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_migr"
    drop_database(url)
    try:
        with ThreadPoolExecutor(6) as pool:
            created = list(pool.map(lambda _: ensure_database(url), range(6)))
            results = list(pool.map(lambda _: apply_migrations(url), range(6)))
        assert created.count(True) == 1
        from pathlib import Path

        # The shared history, then each service's own, applied inside its schema.
        expected = sorted([p.stem for p in Path(migrations_dir()).glob("*.sql")]
                          + [f"{schema}/{p.stem}" for schema, folder in
                             service_migrations_dirs().items() for p in Path(folder).glob("*.sql")])
        assert any("/" in name for name in expected)
        assert sorted(r for result in results for r in result) == expected
        assert sum(1 for r in results if r) == 1
        assert apply_migrations(url) == []
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM certificate_authorities").fetchone() == (0,)
            # A service's migrations made their tables in its schema, yoyo's records beside them.
            assert conn.execute("SELECT count(*) FROM scep_proxy.scep_proxy_outbox").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM scep_proxy._yoyo_migration").fetchone() == (1,)
    finally:
        drop_database(url)
