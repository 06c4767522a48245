"""admin-config's SQL: certificate authorities, activities and API tokens. No HTTP here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class CertificateAuthorityRow:
    id: int
    name: str
    type: str
    url: str
    challenge_encrypted: bytes
    ca_certificates_pem: str
    created_at: datetime
    updated_at: datetime
    max_concurrent_requests: int = 4
    max_issuance_per_second: float | None = None


_CA_COLUMNS = ("id, name, type, url, challenge_encrypted, ca_certificates_pem, created_at, "
               "updated_at, max_concurrent_requests, max_issuance_per_second")


class NameTaken(Exception):
    pass


class CertificateAuthorityStore:
    def get(self, conn: psycopg.Connection, ca_id: int, for_update: bool = False
            ) -> CertificateAuthorityRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = conn.execute(f"SELECT {_CA_COLUMNS} FROM certificate_authorities WHERE id = %s{lock}",
                           (ca_id,)).fetchone()
        return _ca(row)

    def name_exists(self, conn: psycopg.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM certificate_authorities WHERE name = %s",
                            (name,)).fetchone() is not None

    def list(self, conn: psycopg.Connection, limit: int, offset: int) -> list[CertificateAuthorityRow]:
        rows = conn.execute(f"SELECT {_CA_COLUMNS} FROM certificate_authorities ORDER BY id "
                            "LIMIT %s OFFSET %s", (limit, offset)).fetchall()
        return [_ca(r) for r in rows]

    def count(self, conn: psycopg.Connection) -> int:
        return conn.execute("SELECT count(*) AS n FROM certificate_authorities").fetchone()["n"]

    def insert(self, conn: psycopg.Connection, name: str, url: str, challenge_encrypted: bytes,
               ca_certificates_pem: str) -> CertificateAuthorityRow:
        try:
            with conn.transaction():
                row = conn.execute(
                    f"INSERT INTO certificate_authorities (name, url, challenge_encrypted, "
                    f"ca_certificates_pem) VALUES (%s, %s, %s, %s) RETURNING {_CA_COLUMNS}",
                    (name, url, challenge_encrypted, ca_certificates_pem)).fetchone()
        except psycopg.errors.UniqueViolation:
            raise NameTaken(name) from None
        return _ca(row)

    def update(self, conn: psycopg.Connection, ca_id: int, url: str, challenge_encrypted: bytes,
               ca_certificates_pem: str) -> CertificateAuthorityRow:
        row = conn.execute(
            f"UPDATE certificate_authorities SET url = %s, challenge_encrypted = %s, "
            f"ca_certificates_pem = %s, updated_at = now() WHERE id = %s RETURNING {_CA_COLUMNS}",
            (url, challenge_encrypted, ca_certificates_pem, ca_id)).fetchone()
        return _ca(row)

    def set_limits(self, conn: psycopg.Connection, ca_id: int, max_concurrent_requests: int,
                   max_issuance_per_second: float | None) -> CertificateAuthorityRow:
        # updated_at is left alone on purpose: it is the revision that re-sends profiles.
        row = conn.execute(
            f"UPDATE certificate_authorities SET max_concurrent_requests = %s, "
            f"max_issuance_per_second = %s WHERE id = %s RETURNING {_CA_COLUMNS}",
            (max_concurrent_requests, max_issuance_per_second, ca_id)).fetchone()
        return _ca(row)

    def delete(self, conn: psycopg.Connection, ca_id: int) -> bool:
        return conn.execute("DELETE FROM certificate_authorities WHERE id = %s",
                            (ca_id,)).rowcount == 1


def _ca(row: dict[str, Any] | None) -> CertificateAuthorityRow | None:
    if row is None:
        return None
    return CertificateAuthorityRow(**{**row, "challenge_encrypted": bytes(row["challenge_encrypted"])})


class ActivityStore:
    def record(self, conn: psycopg.Connection, type_: str, actor: str, details: dict[str, Any]) -> None:
        conn.execute("INSERT INTO activities (type, actor, details) VALUES (%s, %s, %s)",
                     (type_, actor, Jsonb(details)))

    _FILTER = ("WHERE (%(type)s::text IS NULL OR type = %(type)s) "
               "AND (%(actor)s::text IS NULL OR actor = %(actor)s)")

    def list(self, conn: psycopg.Connection, limit: int, offset: int, type_: str | None = None,
             actor: str | None = None) -> list[dict[str, Any]]:
        return conn.execute(
            f"SELECT id, type, actor, details, created_at FROM activities {self._FILTER} "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            {"type": type_, "actor": actor, "limit": limit, "offset": offset}).fetchall()

    def count(self, conn: psycopg.Connection, type_: str | None = None, actor: str | None = None) -> int:
        return conn.execute(f"SELECT count(*) AS n FROM activities {self._FILTER}",
                            {"type": type_, "actor": actor}).fetchone()["n"]


class ApiTokenStore:
    def create(self, conn: psycopg.Connection, name: str, token_sha256: bytes, role: str) -> None:
        try:
            with conn.transaction():
                conn.execute("INSERT INTO api_tokens (name, token_sha256, role) VALUES (%s, %s, %s)",
                             (name, token_sha256, role))
        except psycopg.errors.UniqueViolation:
            raise NameTaken(name) from None

    def find_active(self, conn: psycopg.Connection, token_sha256: bytes) -> dict[str, Any] | None:
        """The name and role of the unrevoked token with this hash; records its use."""
        return conn.execute(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = %s "
            "AND revoked_at IS NULL RETURNING name, role", (token_sha256,)).fetchone()

    def revoke(self, conn: psycopg.Connection, name: str) -> bool:
        return conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = %s "
                            "AND revoked_at IS NULL", (name,)).rowcount == 1

    def list(self, conn: psycopg.Connection) -> list[dict[str, Any]]:
        return conn.execute("SELECT name, role, created_at, last_used_at, revoked_at "
                            "FROM api_tokens ORDER BY id").fetchall()


class ProfileStore:
    def insert(self, conn: psycopg.Connection, profile_uuid: str, name: str, identifier: str,
               payload_uuid: str, raw: bytes, checksum: bytes, has_scep_payload: bool,
               ca_ids: list[int]) -> dict[str, Any]:
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum, "
                    "has_scep_payload) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING uuid, name, identifier, created_at",
                    (profile_uuid, name, identifier, payload_uuid, raw, checksum,
                     has_scep_payload)).fetchone()
                if ca_ids:
                    conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                                 "SELECT %s, unnest(%s::bigint[])", (profile_uuid, ca_ids))
        except psycopg.errors.UniqueViolation:
            raise NameTaken(identifier) from None
        return row

    def identifier_exists(self, conn: psycopg.Connection, identifier: str) -> bool:
        return conn.execute("SELECT 1 FROM profiles WHERE identifier = %s",
                            (identifier,)).fetchone() is not None

    def list(self, conn: psycopg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
        return conn.execute("SELECT uuid, name, identifier, created_at FROM profiles "
                            "ORDER BY created_at, uuid LIMIT %s OFFSET %s", (limit, offset)).fetchall()

    def get(self, conn: psycopg.Connection, profile_uuid: str,
            for_update: bool = False) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        return conn.execute("SELECT uuid, name, identifier, created_at FROM profiles WHERE uuid = %s"
                            + lock, (profile_uuid,)).fetchone()

    def count(self, conn: psycopg.Connection) -> int:
        return conn.execute("SELECT count(*) AS n FROM profiles").fetchone()["n"]

    def replace(self, conn: psycopg.Connection, profile_uuid: str, name: str, payload_uuid: str,
                raw: bytes, checksum: bytes, has_scep_payload: bool, ca_ids: list[int]) -> None:
        conn.execute("UPDATE profiles SET name = %s, payload_uuid = %s, raw = %s, checksum = %s, "
                     "has_scep_payload = %s, updated_at = now() WHERE uuid = %s",
                     (name, payload_uuid, raw, checksum, has_scep_payload, profile_uuid))
        conn.execute("DELETE FROM profile_certificate_authorities WHERE profile_uuid = %s",
                     (profile_uuid,))
        if ca_ids:
            conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                         "SELECT %s, unnest(%s::bigint[])", (profile_uuid, ca_ids))

    def state(self, conn: psycopg.Connection, profile_uuid: str) -> dict[str, Any] | None:
        """What config.changed carries of a profile (mdmscep_common.config_events)."""
        return conn.execute(
            "SELECT uuid, identifier, name, raw, checksum, has_scep_payload, "
            "ARRAY(SELECT ca_id FROM profile_certificate_authorities pc "
            "      WHERE pc.profile_uuid = p.uuid ORDER BY ca_id) AS ca_ids "
            "FROM profiles p WHERE uuid = %s", (profile_uuid,)).fetchone()

    def delete(self, conn: psycopg.Connection, profile_uuid: str) -> dict[str, Any] | None:
        return conn.execute("DELETE FROM profiles WHERE uuid = %s RETURNING uuid, name, identifier",
                            (profile_uuid,)).fetchone()

    def names_using_ca(self, conn: psycopg.Connection, ca_id: int) -> list[str]:
        rows = conn.execute("SELECT p.name FROM profiles p JOIN profile_certificate_authorities pc "
                            "ON pc.profile_uuid = p.uuid WHERE pc.ca_id = %s ORDER BY p.name",
                            (ca_id,)).fetchall()
        return [r["name"] for r in rows]

    def current_names(self, db, profile_uuids: list[str]) -> dict[str, str]:
        """The current names of the profiles that still exist among `profile_uuids`: what
        admin-config overlays on rows other services own (deliveries, certificates) that name a
        profile. No transaction is opened when there is nothing to name."""
        uuids = list({uuid for uuid in profile_uuids if uuid})
        if not uuids:
            return {}
        with db.transaction() as conn:
            rows = conn.execute("SELECT uuid, name FROM profiles WHERE uuid = ANY(%s)",
                                (uuids,)).fetchall()
        return {r["uuid"]: r["name"] for r in rows}


class CertificateAuthorityNames:
    """CA name → id, for profile validation."""

    def ids_by_name(self, conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
        rows = conn.execute("SELECT name, id FROM certificate_authorities WHERE name = ANY(%s)",
                            (names,)).fetchall()
        return {r["name"]: r["id"] for r in rows}
