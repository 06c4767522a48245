"""admin-config's SQL: certificate authorities, activities, API tokens, profiles, teams and labels.
No HTTP here."""

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


MAX_BIGINT = (1 << 63) - 1  # ids are bigserial: a larger number names nothing


def _is_id(value: int) -> bool:
    return 0 < value <= MAX_BIGINT


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


_LABEL_MODES = ("include_all", "include_any", "exclude_any")  # config_events.LABEL_MODES
_PROFILE_COLUMNS = "uuid, name, identifier, team_id, created_at"
# Profiles of one team (`team` 0: of no team), or of every team (`team` NULL).
_PROFILE_TEAM = "(%(team)s::bigint IS NULL OR COALESCE(team_id, 0) = %(team)s)"


class ProfileStore:
    def insert(self, conn: psycopg.Connection, profile_uuid: str, name: str, identifier: str,
               payload_uuid: str, raw: bytes, checksum: bytes, has_scep_payload: bool,
               ca_ids: list[int], team_id: int | None = None,
               labels: list[tuple[str, int]] | None = None) -> dict[str, Any]:
        """`labels`: the profile's label rule as (mode, label id) pairs."""
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum, "
                    "has_scep_payload, team_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    f"RETURNING {_PROFILE_COLUMNS}",
                    (profile_uuid, name, identifier, payload_uuid, raw, checksum,
                     has_scep_payload, team_id)).fetchone()
                if ca_ids:
                    conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                                 "SELECT %s, unnest(%s::bigint[])", (profile_uuid, ca_ids))
                if labels:
                    conn.execute("INSERT INTO profile_labels (profile_uuid, mode, label_id) "
                                 "SELECT %s, unnest(%s::text[]), unnest(%s::bigint[])",
                                 (profile_uuid, [m for m, _ in labels], [i for _, i in labels]))
        except psycopg.errors.UniqueViolation:
            raise NameTaken(identifier) from None
        return row

    def identifier_exists(self, conn: psycopg.Connection, identifier: str,
                          team_id: int | None = None) -> bool:
        """Whether a profile of that team (None: of no team) has this PayloadIdentifier."""
        return conn.execute("SELECT 1 FROM profiles WHERE identifier = %s "
                            "AND COALESCE(team_id, 0) = %s",
                            (identifier, team_id or 0)).fetchone() is not None

    def list(self, conn: psycopg.Connection, limit: int, offset: int,
             team: int | None = None) -> list[dict[str, Any]]:
        """`team`: None for every profile, 0 for those of no team, else that team's."""
        return conn.execute(f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE {_PROFILE_TEAM} "
                            "ORDER BY created_at, uuid LIMIT %(limit)s OFFSET %(offset)s",
                            {"team": team, "limit": limit, "offset": offset}).fetchall()

    def get(self, conn: psycopg.Connection, profile_uuid: str,
            for_update: bool = False) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        return conn.execute(f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE uuid = %s" + lock,
                            (profile_uuid,)).fetchone()

    def count(self, conn: psycopg.Connection, team: int | None = None) -> int:
        return conn.execute(f"SELECT count(*) AS n FROM profiles WHERE {_PROFILE_TEAM}",
                            {"team": team}).fetchone()["n"]

    def label_names(self, conn: psycopg.Connection,
                    profile_uuids: list[str]) -> dict[str, dict[str, list[str]]]:
        """Each profile's label rule by label name: uuid → {mode: [names]} (every mode)."""
        scopes = {u: {mode: [] for mode in _LABEL_MODES} for u in profile_uuids}
        if profile_uuids:
            rows = conn.execute("SELECT pl.profile_uuid, pl.mode, l.name FROM profile_labels pl "
                                "JOIN labels l ON l.id = pl.label_id "
                                "WHERE pl.profile_uuid = ANY(%s) ORDER BY l.name",
                                (profile_uuids,)).fetchall()
            for r in rows:
                scopes[r["profile_uuid"]][r["mode"]].append(r["name"])
        return scopes

    def replace(self, conn: psycopg.Connection, profile_uuid: str, name: str, payload_uuid: str,
                raw: bytes, checksum: bytes, has_scep_payload: bool, ca_ids: list[int]) -> None:
        """New content; the team and label rule stay."""
        conn.execute("UPDATE profiles SET name = %s, payload_uuid = %s, raw = %s, checksum = %s, "
                     "has_scep_payload = %s, updated_at = now() WHERE uuid = %s",
                     (name, payload_uuid, raw, checksum, has_scep_payload, profile_uuid))
        conn.execute("DELETE FROM profile_certificate_authorities WHERE profile_uuid = %s",
                     (profile_uuid,))
        if ca_ids:
            conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                         "SELECT %s, unnest(%s::bigint[])", (profile_uuid, ca_ids))

    def state(self, conn: psycopg.Connection, profile_uuid: str) -> dict[str, Any] | None:
        """What config.changed carries of a profile (mdmscep_common.config_events), its scope
        too: `team_id`, and `labels` as {mode: [label ids]}."""
        return conn.execute(
            "SELECT uuid, identifier, name, raw, checksum, has_scep_payload, team_id, "
            "ARRAY(SELECT ca_id FROM profile_certificate_authorities pc "
            "      WHERE pc.profile_uuid = p.uuid ORDER BY ca_id) AS ca_ids, "
            "(SELECT COALESCE(jsonb_object_agg(mode, ids), '{}'::jsonb) FROM "
            " (SELECT mode, jsonb_agg(label_id ORDER BY label_id) AS ids FROM profile_labels pl "
            "  WHERE pl.profile_uuid = p.uuid GROUP BY mode) m) AS labels "
            "FROM profiles p WHERE uuid = %s", (profile_uuid,)).fetchone()

    def delete(self, conn: psycopg.Connection, profile_uuid: str) -> dict[str, Any] | None:
        return conn.execute("DELETE FROM profiles WHERE uuid = %s RETURNING uuid, name, identifier",
                            (profile_uuid,)).fetchone()

    def of_team(self, conn: psycopg.Connection, team_id: int) -> list[str]:
        """The UUIDs of a team's profiles, locked (they are about to go with it)."""
        rows = conn.execute("SELECT uuid FROM profiles WHERE team_id = %s ORDER BY created_at, uuid "
                            "FOR UPDATE", (team_id,)).fetchall()
        return [r["uuid"] for r in rows]

    def names_using_ca(self, conn: psycopg.Connection, ca_id: int) -> list[str]:
        rows = conn.execute("SELECT p.name FROM profiles p JOIN profile_certificate_authorities pc "
                            "ON pc.profile_uuid = p.uuid WHERE pc.ca_id = %s ORDER BY p.name",
                            (ca_id,)).fetchall()
        return [r["name"] for r in rows]

    def names_using_label(self, conn: psycopg.Connection, label_id: int) -> list[str]:
        rows = conn.execute("SELECT p.name FROM profiles p JOIN profile_labels pl "
                            "ON pl.profile_uuid = p.uuid WHERE pl.label_id = %s ORDER BY p.name",
                            (label_id,)).fetchall()
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


class TeamStore:
    """Teams, and which team each host is in (no row: no team)."""

    def insert(self, conn: psycopg.Connection, name: str) -> dict[str, Any]:
        try:
            with conn.transaction():
                return conn.execute("INSERT INTO teams (name) VALUES (%s) "
                                    "RETURNING id, name, created_at", (name,)).fetchone()
        except psycopg.errors.UniqueViolation:
            raise NameTaken(name) from None

    def get(self, conn: psycopg.Connection, team_id: int, lock: str = "") -> dict[str, Any] | None:
        """`lock`: "" or "UPDATE" (to delete it) or "SHARE" (to point at it)."""
        suffix = {"": "", "UPDATE": " FOR UPDATE", "SHARE": " FOR SHARE"}[lock]
        if not _is_id(team_id):
            return None
        return conn.execute("SELECT id, name, created_at FROM teams WHERE id = %s" + suffix,
                            (team_id,)).fetchone()

    def list(self, conn: psycopg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
        return conn.execute(
            "SELECT t.id, t.name, t.created_at, "
            "(SELECT count(*) FROM host_teams h WHERE h.team_id = t.id) AS host_count "
            "FROM teams t ORDER BY t.id LIMIT %s OFFSET %s", (limit, offset)).fetchall()

    def count(self, conn: psycopg.Connection) -> int:
        return conn.execute("SELECT count(*) AS n FROM teams").fetchone()["n"]

    def ids_by_name(self, conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
        rows = conn.execute("SELECT name, id FROM teams WHERE name = ANY(%s)", (names,)).fetchall()
        return {r["name"]: r["id"] for r in rows}

    def delete(self, conn: psycopg.Connection, team_id: int) -> bool:
        return conn.execute("DELETE FROM teams WHERE id = %s", (team_id,)).rowcount == 1

    def hosts(self, conn: psycopg.Connection, team_id: int) -> list[str]:
        rows = conn.execute("SELECT host_uuid FROM host_teams WHERE team_id = %s ORDER BY host_uuid",
                            (team_id,)).fetchall()
        return [r["host_uuid"] for r in rows]

    def hosts_in_any_team(self, conn: psycopg.Connection) -> set[str]:
        rows = conn.execute("SELECT host_uuid FROM host_teams").fetchall()
        return {r["host_uuid"] for r in rows}

    def of_hosts(self, conn: psycopg.Connection, host_uuids: list[str]) -> dict[str, int]:
        """host → team of the named hosts that are in one."""
        if not host_uuids:
            return {}
        rows = conn.execute("SELECT host_uuid, team_id FROM host_teams WHERE host_uuid = ANY(%s)",
                            (host_uuids,)).fetchall()
        return {r["host_uuid"]: r["team_id"] for r in rows}

    def assign(self, conn: psycopg.Connection, host_uuids: list[str],
               team_id: int | None) -> list[str]:
        """Put the hosts (distinct) in the team (None: in none); returns those whose team
        changed, their rows locked until the transaction ends."""
        if team_id is None:
            rows = conn.execute("DELETE FROM host_teams WHERE host_uuid = ANY(%s) "
                                "RETURNING host_uuid", (host_uuids,)).fetchall()
        else:
            rows = conn.execute(
                "INSERT INTO host_teams (host_uuid, team_id) SELECT unnest(%s::text[]), %s "
                "ON CONFLICT (host_uuid) DO UPDATE SET team_id = EXCLUDED.team_id "
                "WHERE host_teams.team_id IS DISTINCT FROM EXCLUDED.team_id RETURNING host_uuid",
                (host_uuids, team_id)).fetchall()
        return sorted(r["host_uuid"] for r in rows)

    def empty(self, conn: psycopg.Connection, team_id: int) -> list[str]:
        """Take every host out of the team; returns them."""
        rows = conn.execute("DELETE FROM host_teams WHERE team_id = %s RETURNING host_uuid",
                            (team_id,)).fetchall()
        return sorted(r["host_uuid"] for r in rows)


_LABEL_COLUMNS = ("id, name, criteria, created_at, updated_at, "
                  "ARRAY(SELECT host_uuid FROM label_hosts lh WHERE lh.label_id = l.id "
                  "      ORDER BY host_uuid) AS hosts")


class LabelStore:
    """Labels: manual (criteria NULL, hosts in label_hosts) or dynamic (criteria)."""

    def insert(self, conn: psycopg.Connection, name: str,
               criteria: dict[str, str] | None) -> dict[str, Any]:
        try:
            with conn.transaction():
                return conn.execute("INSERT INTO labels (name, criteria) VALUES (%s, %s) "
                                    "RETURNING id, name, criteria, created_at, updated_at",
                                    (name, None if criteria is None else Jsonb(criteria))
                                    ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise NameTaken(name) from None

    def get(self, conn: psycopg.Connection, label_id: int,
            for_update: bool = False) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if for_update else ""
        if not _is_id(label_id):
            return None
        return conn.execute(f"SELECT {_LABEL_COLUMNS} FROM labels l WHERE id = %s{lock}",
                            (label_id,)).fetchone()

    def list(self, conn: psycopg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
        return conn.execute(f"SELECT {_LABEL_COLUMNS} FROM labels l ORDER BY id LIMIT %s OFFSET %s",
                            (limit, offset)).fetchall()

    def count(self, conn: psycopg.Connection) -> int:
        return conn.execute("SELECT count(*) AS n FROM labels").fetchone()["n"]

    def ids_by_name(self, conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
        """name → id of the named labels that exist, locked against deletion (FOR SHARE)."""
        rows = conn.execute("SELECT name, id FROM labels WHERE name = ANY(%s) ORDER BY id "
                            "FOR SHARE", (names,)).fetchall()
        return {r["name"]: r["id"] for r in rows}

    def set_hosts(self, conn: psycopg.Connection, label_id: int, host_uuids: list[str]) -> None:
        """A manual label's hosts become `host_uuids` (distinct)."""
        conn.execute("DELETE FROM label_hosts WHERE label_id = %s AND NOT host_uuid = ANY(%s)",
                     (label_id, host_uuids))
        if host_uuids:
            conn.execute("INSERT INTO label_hosts (label_id, host_uuid) "
                         "SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                         (label_id, host_uuids))

    def rename(self, conn: psycopg.Connection, label_id: int, name: str) -> None:
        try:
            with conn.transaction():
                conn.execute("UPDATE labels SET name = %s WHERE id = %s", (name, label_id))
        except psycopg.errors.UniqueViolation:
            raise NameTaken(name) from None

    def touch(self, conn: psycopg.Connection, label_id: int) -> None:
        conn.execute("UPDATE labels SET updated_at = now() WHERE id = %s", (label_id,))

    def delete(self, conn: psycopg.Connection, label_id: int) -> bool:
        return conn.execute("DELETE FROM labels WHERE id = %s", (label_id,)).rowcount == 1

    def manual_of_host(self, conn: psycopg.Connection, host_uuid: str) -> list[int]:
        """The manual labels listing the host, locked (FOR UPDATE)."""
        rows = conn.execute("SELECT l.id FROM labels l JOIN label_hosts lh ON lh.label_id = l.id "
                            "WHERE lh.host_uuid = %s ORDER BY l.id FOR UPDATE OF l",
                            (host_uuid,)).fetchall()
        return [r["id"] for r in rows]

    def drop_host(self, conn: psycopg.Connection, label_id: int, host_uuid: str) -> None:
        conn.execute("DELETE FROM label_hosts WHERE label_id = %s AND host_uuid = %s",
                     (label_id, host_uuid))


class CertificateAuthorityNames:
    """CA name → id, for profile validation."""

    def ids_by_name(self, conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
        rows = conn.execute("SELECT name, id FROM certificate_authorities WHERE name = ANY(%s)",
                            (names,)).fetchall()
        return {r["name"]: r["id"] for r in rows}
