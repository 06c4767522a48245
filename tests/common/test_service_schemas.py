"""Each service's tables sit in its own schema, and its role reaches that schema alone (plus the
grants CROSS_SERVICE_READS would list: none): enforced by PostgreSQL, not by convention.
Several stacks share one cluster: their roles never collide and never reach each other."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from mdmscep_common.db import database_name, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from mdmscep_common.service_database import (
    CROSS_SERVICE_READS,
    SCHEMAS,
    prepare_service_roles,
    service_dsn,
    service_role,
)
from tests.conftest import PG_BASE
from tests.support.database_rights import role_can


def _tables(conn) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s) "
        "AND tablename NOT LIKE '\\_yoyo%%' AND tablename <> 'yoyo_lock'",
        (list(SCHEMAS.values()),)).fetchall()
    tables: dict[str, list[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, []).append(table)
    return tables


@pytest.fixture(scope="module")
def tables(database_url):
    with psycopg.connect(database_url) as conn:
        return _tables(conn)


def test_every_table_is_in_a_service_schema(database_url, tables):
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "AND tablename NOT LIKE '\\_yoyo%%' AND tablename <> 'yoyo_lock'"
                            ).fetchall()
    assert left == []
    assert {"hosts", "commands"} <= set(tables["mdm_endpoint"])
    assert {"host_profiles", "scep_codes"} <= set(tables["profile_processor"])
    assert {"certificate_authorities", "profiles", "api_tokens"} <= set(tables["admin_config"])
    assert {"ca_requests"} <= set(tables["scep_proxy"])


@pytest.mark.parametrize("service", sorted(SCHEMAS))
def test_a_service_role_reads_its_schema_and_only_the_grants_listed(database_url, tables,
                                                                    service):
    dsn = service_dsn(database_url, service)
    granted = {(schema, table) for _, schema, table in CROSS_SERVICE_READS.get(service, [])}
    for schema, names in tables.items():
        for table in names:
            readable = role_can(dsn, f"SELECT 1 FROM {schema}.{table} LIMIT 1")
            if schema == SCHEMAS[service]:
                assert readable, f"{service} cannot read its own {schema}.{table}"
                assert role_can(dsn, f"DELETE FROM {schema}.{table} WHERE false")
            elif (schema, table) in granted:
                # A granted read is a read: never a write.
                assert not role_can(dsn, f"DELETE FROM {schema}.{table} WHERE false")
            else:
                assert not readable, f"{service} reads {schema}.{table}: not granted"


@pytest.mark.parametrize("service", sorted(SCHEMAS))
def test_a_service_role_cannot_create_tables_or_touch_migration_records(database_url, service):
    dsn = service_dsn(database_url, service)
    schema = SCHEMAS[service]
    assert not role_can(dsn, "CREATE TABLE public.sneaky (x int)")
    assert not role_can(dsn, f"CREATE TABLE {schema}.sneaky (x int)")
    with psycopg.connect(database_url) as conn:
        records = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND "
                               "tablename LIKE '\\_yoyo%%'", (schema,)).fetchall()
    for (table,) in records:
        assert not role_can(dsn, f"SELECT 1 FROM {schema}.{table}")


def test_unqualified_sql_of_a_service_reaches_its_own_tables(database_url):
    with psycopg.connect(service_dsn(database_url, "mdm-endpoint")) as conn:
        assert conn.execute("SELECT count(*) FROM hosts").fetchone()[0] >= 0
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT count(*) FROM host_profiles")


def test_parallel_stacks_have_their_own_roles_and_cannot_reach_each_other(database_url):
    other = f"{PG_BASE}/mdmscep_test_other_{uuid.uuid4().hex[:8]}"
    ensure_database(other)
    try:
        apply_migrations(other)
        for service in SCHEMAS:
            assert service_dsn(other, service) != service_dsn(database_url, service)
            # This run's role cannot even connect to the other stack's database.
            mine = service_dsn(database_url, service)
            theirs_db = other.rsplit("/", 1)[1]
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(mine.rsplit("/", 1)[0] + "/" + theirs_db).close()
        # Preparing the roles again changes nothing and widens nothing.
        assert prepare_service_roles(other) == prepare_service_roles(other)
    finally:
        drop_database(other)
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s",
                            (other.rsplit("/", 1)[1] + "%",)).fetchone()[0]
    assert left == 0  # dropping a stack's database drops its roles


def test_long_database_names_give_distinct_roles_within_postgresql_limits():
    a, b = "x" * 70 + "a", "x" * 70 + "b"
    for service in SCHEMAS:
        assert len(service_role(a, service)) <= 63
        assert service_role(a, service) != service_role(b, service)


def test_an_operator_can_name_each_services_url(database_url):
    custom = "postgresql://proxy_role:secret@db.internal:5432/mdmscep"
    assert service_dsn(database_url, "scep-proxy", {"SCEP_PROXY_DATABASE_URL": custom}) == custom
    assert service_dsn(database_url, "admin-config",
                       {"SCEP_PROXY_DATABASE_URL": custom}).startswith("postgresql://")


def test_a_grant_dropped_from_the_list_is_revoked(database_url):
    """profile-processor once inserted admin-config's activities; it announces renewals as an
    event now, and preparing the roles takes the old grant back from databases that had it."""
    processor = service_dsn(database_url, "profile-processor")
    role = service_role(database_name(database_url), "profile-processor")
    insert = ("INSERT INTO admin_config.activities (type, actor, details) "
              "VALUES ('renewed_certificates', 'profile-processor', '{}')")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA admin_config TO "{role}"')
        conn.execute(f'GRANT INSERT ON admin_config.activities TO "{role}"')
        conn.execute(f'GRANT USAGE ON SEQUENCE admin_config.activities_id_seq TO "{role}"')
    assert role_can(processor, insert)
    prepare_service_roles(database_url)
    assert not role_can(processor, insert)
    with psycopg.connect(database_url) as conn:
        held = conn.execute(
            "SELECT has_sequence_privilege(%s, 'admin_config.activities_id_seq', 'USAGE'), "
            "has_schema_privilege(%s, 'admin_config', 'USAGE')", (role, role)).fetchone()
    assert held == (False, False)  # nothing of admin-config's schema is left


def test_no_service_reads_another_schema():
    """The processor's reads of admin-config's profiles and CAs and of mdm-endpoint's hosts
    became read models fed by their events (profile_processor/read_models.py)."""
    assert CROSS_SERVICE_READS == {}


def test_the_processor_no_longer_reads_the_tables_its_read_models_replace(database_url):
    processor = service_dsn(database_url, "profile-processor")
    for table in ("admin_config.profiles", "admin_config.certificate_authorities",
                  "admin_config.profile_certificate_authorities", "mdm_endpoint.hosts"):
        assert not role_can(processor, f"SELECT 1 FROM {table} LIMIT 1"), table
    for table in ("known_profiles", "known_certificate_authorities",
                  "known_profile_certificate_authorities", "enrolled_hosts",
                  "read_model_sequences"):
        assert role_can(processor, f"SELECT 1 FROM {table} LIMIT 1"), table


def test_the_scep_proxy_reaches_its_own_schema_alone(database_url):
    """The proxy learns a CA's max_concurrent_requests from AuthorizeScep now: its old read of
    admin-config's certificate_authorities is taken back, and its search_path is its schema."""
    proxy = service_dsn(database_url, "scep-proxy")
    role = service_role(database_name(database_url), "scep-proxy")
    read = "SELECT max_concurrent_requests FROM admin_config.certificate_authorities"
    assert "scep-proxy" not in CROSS_SERVICE_READS
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA admin_config TO "{role}"')
        conn.execute(f'GRANT SELECT ON admin_config.certificate_authorities TO "{role}"')
    assert role_can(proxy, read)
    prepare_service_roles(database_url)
    assert not role_can(proxy, read)
    with psycopg.connect(proxy) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "scep_proxy"
