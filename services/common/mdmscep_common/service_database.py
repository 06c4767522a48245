"""Each service's own corner of the database: a schema, and a role that has rights on it alone.

The migration step (make run's launcher, `mdmscep-migrate`, the deploy migrate job) connects with
the owner's DATABASE_URL and, after the migrations, calls `prepare_service_roles`:
- one schema per service (SCHEMAS) holds that service's tables (migration 0013 moved them there);
- one login role per service, named after the database (`service_role`), so that several stacks
  sharing one PostgreSQL cluster (test runs, outside checks), each with its own database, never
  share a role: a role of one stack can neither connect to another stack's database (CONNECT is
  revoked from PUBLIC and granted to that database's own roles) nor use its schemas;
- the role gets USAGE and DML on its schema's tables and sequences, and its search_path is its
  schema, so a service's unqualified SQL can only name its own tables. CROSS_SERVICE_READS would
  list, table by table, a grant on another service's table; it is empty, and a grant dropped from
  it is revoked (docs/architecture.md).

Services then connect as their role (`service_dsn`): an operator may give each service its own URL
(`<SERVICE>_DATABASE_URL`, e.g. SCEP_PROXY_DATABASE_URL, with its own password); otherwise the
launcher derives it from DATABASE_URL with the role as user (trust or peer authentication, or a
password set with `ALTER ROLE` by the operator).
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import quote, unquote, urlparse, urlunparse

import psycopg
from psycopg import sql

from .db import CONNECT_TIMEOUT_SECONDS, database_name
from .service_tls import ADMIN_CONFIG, MDM_ENDPOINT, PROFILE_PROCESSOR, SCEP_PROXY

log = logging.getLogger(__name__)

# Service → its schema.
SCHEMAS: dict[str, str] = {
    ADMIN_CONFIG: "admin_config",
    MDM_ENDPOINT: "mdm_endpoint",
    PROFILE_PROCESSOR: "profile_processor",
    SCEP_PROXY: "scep_proxy",
}

# What a service touches of another's tables: service → [(privilege, schema, table)], each a
# database grant. None today: each service reads only its own schema, and another's data reaches
# it through the owner's gRPC API or a read model fed by the owner's events (the processor's
# read_models.py). A grant dropped from here is revoked at the next migration.
CROSS_SERVICE_READS: dict[str, list[tuple[str, str, str]]] = {}

MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names


def service_role(database: str, service: str) -> str:
    """`<database>_<schema>`, e.g. mdmscep_scep_proxy; a database name too long for that is
    shortened and made unique with a digest of the whole name."""
    schema = SCHEMAS[service]
    name = f"{database}_{schema}"
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:10]
    keep = MAX_IDENTIFIER - len(schema) - len(digest) - 2
    return f"{database[:keep]}_{digest}_{schema}"


def search_path(service: str) -> list[str]:
    """The service's schema, then the schemas it still reads (CROSS_SERVICE_READS)."""
    others = [schema for _, schema, _ in CROSS_SERVICE_READS.get(service, [])]
    return [SCHEMAS[service], *dict.fromkeys(others)]


def service_url_variable(service: str) -> str:
    """scep-proxy → SCEP_PROXY_DATABASE_URL."""
    return SCHEMAS[service].upper() + "_DATABASE_URL"


def service_dsn(owner_dsn: str, service: str, env: dict[str, str] | None = None) -> str:
    """The URL `service` connects with: `<SERVICE>_DATABASE_URL` when set, else DATABASE_URL
    with the service's role as user (and no password)."""
    configured = (env or {}).get(service_url_variable(service))
    if configured:
        return configured
    parts = urlparse(owner_dsn)
    role = service_role(database_name(owner_dsn), service)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(role, safe="") + "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))


def _password_of(dsn: str) -> str | None:
    password = urlparse(dsn).password
    return unquote(password) if password else None


def _role_of(dsn: str) -> str | None:
    user = urlparse(dsn).username
    return unquote(user) if user else None


def prepare_service_roles(owner_dsn: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Create (or bring up to date) every service's schema, role and grants; returns
    service → role. Idempotent; safe while services run. A role named by a configured
    `<SERVICE>_DATABASE_URL` is used as is (created if missing, without a password: the operator
    sets it, or the URL's password is set)."""
    database = database_name(owner_dsn)
    roles = {service: _role_of((env or {}).get(service_url_variable(service), ""))
              or service_role(database, service) for service in SCHEMAS}
    with psycopg.connect(owner_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        db = sql.Identifier(database)
        # Roles are cluster-wide: only this database's own roles may connect to it.
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        for service, role in roles.items():
            schema, who = sql.Identifier(SCHEMAS[service]), sql.Identifier(role)
            _ensure_role(conn, role)
            password = _password_of((env or {}).get(service_url_variable(service), ""))
            if password:
                # The URL the service is given (compose, Kubernetes) sets its role's password.
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(who, sql.Literal(password)))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, who))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} "
                                 "TO {}").format(schema, who))
            conn.execute(sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} "
                                 "TO {}").format(schema, who))
            for table in _migration_records(conn, SCHEMAS[service]):
                # yoyo's records of the schema's migrations are the migration step's alone.
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(
                    sql.Identifier(SCHEMAS[service], table), who))
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path TO {}").format(
                who, db, sql.SQL(", ").join(map(sql.Identifier, search_path(service)))))
        for service, grants in CROSS_SERVICE_READS.items():
            who = sql.Identifier(roles[service])
            for privilege, schema, table in grants:
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                    sql.Identifier(schema), who))
                conn.execute(sql.SQL(f"GRANT {privilege} ON {{}} TO {{}}").format(
                    sql.Identifier(schema, table), who))
                if privilege == "INSERT":
                    for sequence in _sequences_of(conn, schema, table):
                        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                            sql.Identifier(schema, sequence), who))
        for service, role in roles.items():
            _revoke_unlisted(conn, service, role)
        # Owner connections (migrations, operators' CLIs, psql) see every service's tables.
        conn.execute(sql.SQL("ALTER DATABASE {} SET search_path TO {}").format(
            db, sql.SQL(", ").join(map(sql.Identifier, [*SCHEMAS.values(), "public"]))))
    log.info("service roles ready", extra={"roles": sorted(roles.values())})
    return roles


def _revoke_unlisted(conn: psycopg.Connection, service: str, role: str) -> None:
    """Take back what the role holds of other services' schemas beyond CROSS_SERVICE_READS: a
    grant dropped from the list (its access moved to an event or a gRPC call) is revoked from
    databases prepared before, not only absent from new ones."""
    listed = CROSS_SERVICE_READS.get(service, [])
    wanted = {(schema, table, privilege) for privilege, schema, table in listed}
    wanted |= {(schema, sequence, "USAGE") for privilege, schema, table in listed
               if privilege == "INSERT" for sequence in _sequences_of(conn, schema, table)}
    others = [schema for name, schema in SCHEMAS.items() if name != service]
    held = conn.execute(
        """SELECT n.nspname, c.relname, c.relkind, a.privilege_type
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                aclexplode(c.relacl) a
           WHERE n.nspname = ANY(%s)
             AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)""",
        (others, role)).fetchall()
    for schema, name, kind, privilege in held:
        if (schema, name, privilege) in wanted:
            continue
        log.info("revoking a cross-service grant no longer listed",
                 extra={"role": role, "relation": f"{schema}.{name}", "privilege": privilege})
        conn.execute(sql.SQL("REVOKE {} ON {} {} FROM {}").format(
            sql.SQL(privilege), sql.SQL("SEQUENCE" if kind == "S" else "TABLE"),
            sql.Identifier(schema, name), sql.Identifier(role)))
    used = {schema for _, schema, _ in listed}
    for schema in others:
        if schema not in used:
            conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(
                sql.Identifier(schema), sql.Identifier(role)))


def _ensure_role(conn: psycopg.Connection, role: str) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        return
    try:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(role)))
    except psycopg.errors.DuplicateObject:
        pass  # another migration step created it a moment ago


def _migration_records(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND "
                        "(tablename LIKE '\\_yoyo%%' OR tablename = 'yoyo_lock')", (schema,))
    return [row[0] for row in rows.fetchall()]


def _sequences_of(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        """SELECT s.relname FROM pg_depend d
           JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
           JOIN pg_class t ON t.oid = d.refobjid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           WHERE n.nspname = %s AND t.relname = %s""", (schema, table)).fetchall()
    return [row[0] for row in rows]


def drop_service_roles(owner_dsn: str) -> None:
    """Drop the roles `prepare_service_roles` made for this database (after the database itself
    is dropped: roles are cluster-wide and would pile up)."""
    database = database_name(owner_dsn)
    admin = urlunparse(urlparse(owner_dsn)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        for service in SCHEMAS:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.Identifier(service_role(database, service))))
