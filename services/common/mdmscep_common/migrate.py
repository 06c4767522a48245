"""Apply the SQL migrations in order (yoyo), once, even when several replicas start together.

Two kinds of history: the shared one (mdmscep_common/migrations, 0001-0013: the tables as they
were made before each service had a schema; 0013 moves them into their schemas), then each
service's own (`<service package>/migrations`, applied inside the service's schema, with yoyo's
records there too). After them, every service's role and grants are brought up to date
(service_database.prepare_service_roles).

yoyo records applied migrations in its own table; a PostgreSQL advisory lock held around the
whole run makes concurrent runs wait for each other instead of racing on CREATE TABLE.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from importlib import resources
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

from .db import CONNECT_TIMEOUT_SECONDS
from .service_database import SCHEMAS, prepare_service_roles

log = logging.getLogger(__name__)

# Arbitrary constant shared by every replica: "mdmscep migrations".
MIGRATION_LOCK_KEY = 0x6D646D7363657001


def migrations_dir() -> str:
    return str(resources.files("mdmscep_common") / "migrations")


def service_migrations_dirs() -> dict[str, str]:
    """Schema → the migrations folder of the service owning it (`<package>/migrations`). The
    package is located, not imported; a folder that does not exist has nothing to apply."""
    dirs = {}
    for schema in SCHEMAS.values():
        spec = importlib.util.find_spec(schema)  # the service packages are named like schemas
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the {schema} package (its migrations) is not installed")
        folder = Path(list(spec.submodule_search_locations)[0]) / "migrations"
        if folder.is_dir():
            dirs[schema] = str(folder)
    return dirs


def _yoyo_dsn(dsn: str, schema: str | None = None) -> str:
    scheme, rest = dsn.split("://", 1)
    url = f"postgresql+psycopg://{rest}"
    if schema:
        url += ("&" if "?" in rest else "?") + "schema=" + schema
    return url


def _apply(dsn: str, folder: str, schema: str | None = None) -> list[str]:
    backend = get_backend(_yoyo_dsn(dsn, schema))
    try:
        pending = backend.to_apply(read_migrations(folder))
        applied = [m.id for m in pending]
        if pending:
            with backend.lock():
                backend.apply_migrations(pending)
            log.info("applied migrations", extra={"migrations": applied, "schema": schema})
        return [m if schema == "public" else f"{schema}/{m}" for m in applied]
    finally:
        backend.connection.close()


def apply_migrations(dsn: str, env: dict[str, str] | None = None) -> list[str]:
    """Apply pending migrations (shared, then each service's) and prepare the service roles;
    returns the ids applied by this call (empty if none). `env`: where per-service
    `<SERVICE>_DATABASE_URL` overrides are looked up (service_database.prepare_service_roles)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            # yoyo's records of the shared history stay in public, whatever search_path says.
            applied = _apply(dsn, migrations_dir(), "public")
            for schema, folder in service_migrations_dirs().items():
                applied += _apply(dsn, folder, schema)
            prepare_service_roles(dsn, env)
            return applied
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def main() -> None:
    from .db import ensure_database
    from .logs import configure_logging
    from .settings import CommonSettings, load_or_exit

    settings = load_or_exit(CommonSettings.from_env)  # DDL only: no service's secrets
    configure_logging("migrate", settings.secret_values())
    ensure_database(settings.database_url)
    applied = apply_migrations(settings.database_url, dict(os.environ))
    print(f"migrations applied: {len(applied)}" + (f" ({', '.join(applied)})" if applied else ""))
