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


def test_an_upgrade_seeds_the_processors_read_models_from_the_owners_rows():
    """A database made before the processor kept its own copies: the processor's migration copies
    the CAs, profiles and enrolled hosts once; from then on only events change them."""
    from mdmscep_common.migrate import _apply

    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_seed"
    drop_database(url)
    ensure_database(url)
    try:
        _apply(url, migrations_dir(), "public")  # the shared history: the owners' tables
        with psycopg.connect(url) as conn:
            ca = conn.execute(
                "INSERT INTO admin_config.certificate_authorities (name, url, challenge_encrypted, "
                "max_issuance_per_second) VALUES ('Old_CA', 'http://ca.test/scep', '\\x02aa', 2.5) "
                "RETURNING id, updated_at").fetchone()
            conn.execute("INSERT INTO admin_config.profiles (uuid, name, identifier, payload_uuid, "
                         "raw, checksum, has_scep_payload) VALUES ('p-old', 'Old', 'com.old', "
                         "'u', '<plist/>', '\\x01', true)")
            conn.execute("INSERT INTO admin_config.profile_certificate_authorities VALUES "
                         "('p-old', %s)", (ca[0],))
            conn.execute("INSERT INTO mdm_endpoint.hosts (uuid, enrolled) VALUES ('H-IN', true), "
                         "('H-OUT', false)")
        assert "profile_processor/0003_read_models" in apply_migrations(url)
        with psycopg.connect(url) as conn:
            copied = conn.execute(
                "SELECT id, updated_at, max_issuance_per_second, challenge_encrypted "
                "FROM profile_processor.known_certificate_authorities").fetchall()
            assert copied == [(ca[0], ca[1], 2.5, b"\x02\xaa")]
            assert conn.execute("SELECT p.uuid, p.has_scep_payload, pc.ca_id FROM "
                                "profile_processor.known_profiles p JOIN "
                                "profile_processor.known_profile_certificate_authorities pc "
                                "ON pc.profile_uuid = p.uuid").fetchall() == [("p-old", True, ca[0])]
            assert conn.execute("SELECT uuid FROM profile_processor.enrolled_hosts"
                                ).fetchall() == [("H-IN",)]
    finally:
        drop_database(url)
