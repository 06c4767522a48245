"""Certificates delivered to hosts, as admins look for them (host_certificates belongs to the
profile-processor; admin-config only reads it)."""

from __future__ import annotations

from typing import Any

from mdmscep_common.timefmt import rfc3339

from .errors import BadRequest
from .hosts import require_host

_COLUMNS = ("c.host_uuid, c.profile_uuid, p.name AS profile_name, c.serial, c.subject, c.issuer, "
            "c.not_before, c.not_after")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {"host_uuid": row["host_uuid"], "profile_uuid": row["profile_uuid"],
            "profile_name": row["profile_name"] or "", "serial": row["serial"],
            "subject": row["subject"], "issuer": row["issuer"],
            "not_before": rfc3339(row["not_before"]), "not_after": rfc3339(row["not_after"])}


class CertificateDirectory:
    def __init__(self, db):
        self._db = db

    def for_host(self, host_uuid: str) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            require_host(conn, host_uuid)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM host_certificates c LEFT JOIN profiles p "
                "ON p.uuid = c.profile_uuid WHERE c.host_uuid = %s ORDER BY c.not_after, c.serial",
                (host_uuid,)).fetchall()
        return [_public(r) for r in rows]

    def expiring(self, within_days: str | None, page: int,
                 per_page: int) -> tuple[list[dict[str, Any]], int]:
        days = None
        if within_days not in (None, ""):
            try:
                days = float(within_days)
            except ValueError:
                days = -1
            if not 0 <= days <= 36500:
                raise BadRequest("expiring_within_days must be a number of days (0-36500)",
                                 [{"name": "expiring_within_days", "reason": "not a number of days"}])
        where, params = "", []
        if days is not None:
            where = "WHERE c.not_after < now() + make_interval(secs => %s)"
            params.append(days * 86400)
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM host_certificates c LEFT JOIN profiles p "
                f"ON p.uuid = c.profile_uuid {where} "
                "ORDER BY c.not_after, c.host_uuid, c.serial LIMIT %s OFFSET %s",
                (*params, per_page, page * per_page)).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM host_certificates c {where}",
                                 params).fetchone()["n"]
        return [_public(r) for r in rows], total
