"""The activity feed (audit log) as admins read it."""

from __future__ import annotations

from typing import Any

from mdmscep_common.timefmt import rfc3339

from .store import ActivityStore


class ActivityService:
    def __init__(self, db, store: ActivityStore):
        self._db = db
        self._store = store

    def list(self, page: int, per_page: int, type_: str | None = None,
             actor: str | None = None) -> tuple[list[dict[str, Any]], int]:
        with self._db.transaction() as conn:
            rows = self._store.list(conn, per_page, page * per_page, type_, actor)
            total = self._store.count(conn, type_, actor)
        return [{"id": r["id"], "type": r["type"], "actor": r["actor"], "details": r["details"],
                 "created_at": rfc3339(r["created_at"])} for r in rows], total
