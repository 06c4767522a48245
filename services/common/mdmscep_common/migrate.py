"""Apply the SQL migrations in order (yoyo), once, even when several replicas start together.

yoyo records applied migrations in its own table; a PostgreSQL advisory lock held around the
whole run makes concurrent runs wait for each other instead of racing on CREATE TABLE.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg
from yoyo import get_backend, read_migrations

from .db import CONNECT_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# Arbitrary constant shared by every replica: "mdmscep migrations".
MIGRATION_LOCK_KEY = 0x6D646D7363657001


def migrations_dir() -> str:
    return str(resources.files("mdmscep_common") / "migrations")


def _yoyo_dsn(dsn: str) -> str:
    scheme, rest = dsn.split("://", 1)
    return f"postgresql+psycopg://{rest}"


def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations; returns the ids applied by this call (empty if none)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            backend = get_backend(_yoyo_dsn(dsn))
            try:
                pending = backend.to_apply(read_migrations(migrations_dir()))
                applied = [m.id for m in pending]
                if pending:
                    with backend.lock():
                        backend.apply_migrations(pending)
                    log.info("applied migrations", extra={"migrations": applied})
                return applied
            finally:
                backend.connection.close()
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def main() -> None:
    from .db import ensure_database
    from .logs import configure_logging
    from .settings import load_settings_or_exit

    settings = load_settings_or_exit(needs_server_private_key=False)  # DDL only: no secrets
    configure_logging("migrate", settings.secret_values())
    ensure_database(settings.database_url)
    applied = apply_migrations(settings.database_url)
    print(f"migrations applied: {len(applied)}" + (f" ({', '.join(applied)})" if applied else ""))
