"""Hosts as admins see them. The hosts table belongs to mdm-endpoint; admin-config only reads it."""

from __future__ import annotations

from typing import Any

from mdmscep_common.timefmt import rfc3339


class HostDirectory:
    def __init__(self, db):
        self._db = db

    def list(self, page: int, per_page: int) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT uuid, serial_number, enrolled, last_seen_at FROM hosts "
                "ORDER BY created_at, uuid LIMIT %s OFFSET %s", (per_page, page * per_page)).fetchall()
        return [{"uuid": r["uuid"], "serial_number": r["serial_number"], "enrolled": r["enrolled"],
                 "last_seen_at": rfc3339(r["last_seen_at"])} for r in rows]
