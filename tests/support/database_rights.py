"""What a PostgreSQL role may do: the schema-ownership tests ask the database itself."""

from __future__ import annotations

import psycopg


def role_can(dsn: str, statement: str) -> bool:
    """Whether the role of `dsn` may run `statement` (rolled back either way)."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True
