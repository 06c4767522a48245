"""PostgreSQL access: one connection pool per process, transactions as context managers.

Stores take a `Database` and never manage connections themselves, so tests can hand them a
`Database` bound to one connection inside a transaction that is rolled back after the test.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5


class Database:
    """A pool of connections; `transaction()` yields a connection inside BEGIN … COMMIT."""

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10, name: str = "mdmscep"):
        self._pool = ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, name=name,
            kwargs={"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                    "application_name": name},
            # A connection broken by a PostgreSQL restart is noticed and replaced on checkout;
            # only connections idle for a while are pinged, so busy ones cost no round trip.
            check=_check_if_idle,
            timeout=10, reconnect_timeout=0)

    def open(self) -> Database:
        self._pool.open(wait=False)
        return self

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield conn
            finally:
                _LAST_USED[id(conn)] = time.monotonic()

    def ping(self) -> bool:
        try:
            with self._pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - health is a yes/no question
            return False


# When each pooled connection was last used (by id; a recycled id only costs one extra ping).
_LAST_USED: dict[int, float] = {}
IDLE_BEFORE_CHECK_SECONDS = 2.0


def _check_if_idle(conn: psycopg.Connection) -> None:
    if time.monotonic() - _LAST_USED.get(id(conn), 0.0) > IDLE_BEFORE_CHECK_SECONDS:
        ConnectionPool.check_connection(conn)


class SingleConnectionDatabase:
    """A Database over one existing connection; nested transactions become savepoints."""

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self._conn.transaction():
            yield self._conn

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _with_dbname(dsn: str, dbname: str) -> str:
    parts = urlparse(dsn)
    return urlunparse(parts._replace(path="/" + dbname))


def database_name(dsn: str) -> str:
    name = urlparse(dsn).path.lstrip("/")
    if not name:
        raise ValueError("DATABASE_URL names no database")
    return name


def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` if missing (make run does this). True if created."""
    name = database_name(dsn)
    with psycopg.connect(_with_dbname(dsn, "postgres"), autocommit=True,
                         connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # another replica created it a moment ago
        log.info("created database", extra={"database": name})
        return True


def drop_database(dsn: str) -> None:
    name = database_name(dsn)
    with psycopg.connect(_with_dbname(dsn, "postgres"), autocommit=True,
                         connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
    from .service_database import drop_service_roles  # its roles are cluster-wide: drop them too

    drop_service_roles(dsn)
