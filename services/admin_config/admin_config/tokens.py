"""API tokens as an admin manages them: created with a role (shown once), listed, revoked."""

from __future__ import annotations

import re
from typing import Any

from mdmscep_common.timefmt import rfc3339

from .auth import new_token, token_hash
from .errors import Conflict, NotFound, UnprocessableEntity, field_error
from .roles import ROLES
from .store import ActivityStore, ApiTokenStore, NameTaken

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")


class TokenService:
    def __init__(self, db, store: ApiTokenStore, activities: ActivityStore):
        self._db = db
        self._store = store
        self._activities = activities

    def create(self, name: Any, role: Any, actor: str) -> dict[str, str]:
        errors = []
        if not isinstance(name, str) or not _NAME.match(name):
            errors.append({"name": "name", "reason": "A token name is 1-100 letters, digits or "
                                                     ". _ @ -"})
        if not isinstance(role, str) or role not in ROLES:
            errors.append({"name": "role", "reason": f"A role is one of {', '.join(ROLES)}"})
        if errors:
            raise UnprocessableEntity(errors[0]["reason"], errors)
        token = new_token()
        with self._db.transaction() as conn:
            try:
                self._store.create(conn, name, token_hash(token), role)
            except NameTaken:
                raise field_error(Conflict, "name", f"A token named {name} already exists") from None
            self._activities.record(conn, "created_api_token", actor, {"name": name, "role": role})
        return {"name": name, "role": role, "token": token}

    def list(self) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            rows = self._store.list(conn)
        return [{"name": r["name"], "role": r["role"], "created_at": rfc3339(r["created_at"]),
                 "last_used_at": rfc3339(r["last_used_at"]),
                 "revoked_at": rfc3339(r["revoked_at"])} for r in rows]

    def revoke(self, name: str, actor: str) -> None:
        with self._db.transaction() as conn:
            if not self._store.revoke(conn, name):
                raise NotFound(f"No active token named {name}")
            self._activities.record(conn, "revoked_api_token", actor, {"name": name})
