"""Configuration profiles: upload (validated), list, delete; each change tells the processor."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from mdmscep_common import bus
from mdmscep_common.timefmt import rfc3339

from .errors import BadRequest, NotFound
from .profile_validation import validate_profile
from .store import ActivityStore, CertificateAuthorityNames, NameTaken, ProfileStore

log = logging.getLogger(__name__)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"profile_uuid": row["uuid"], "name": row["name"], "identifier": row["identifier"],
            "created_at": rfc3339(row["created_at"])}


class ProfileService:
    def __init__(self, db, store: ProfileStore, cas: CertificateAuthorityNames,
                 activities: ActivityStore, publisher):
        self._db = db
        self._store = store
        self._cas = cas
        self._activities = activities
        self._publisher = publisher

    def upload(self, raw: bytes, actor: str) -> str:
        with self._db.transaction() as conn:
            known: dict[str, int] = {}

            def ca_exists(name: str) -> bool:
                known.update(self._cas.ids_by_name(conn, [name]))
                return name in known

            profile = validate_profile(raw, ca_exists)
            if self._store.identifier_exists(conn, profile.identifier):
                raise self._duplicate(profile.identifier)
            profile_uuid = str(uuid.uuid4())
            try:
                self._store.insert(conn, profile_uuid, profile.name, profile.identifier,
                                   profile.payload_uuid, raw, hashlib.sha256(raw).digest(),
                                   profile.has_scep_payload,
                                   [known[name] for name in sorted(profile.ca_names)])
            except NameTaken:
                raise self._duplicate(profile.identifier) from None
            self._activities.record(conn, "created_configuration_profile", actor,
                                    {"profile_name": profile.name,
                                     "profile_identifier": profile.identifier})
        self._changed("added", profile_uuid)
        return profile_uuid

    @staticmethod
    def _duplicate(identifier: str) -> BadRequest:
        message = f"A profile with PayloadIdentifier {identifier} already exists"
        return BadRequest(message, [{"name": "profile", "reason": message}])

    def list(self, page: int, per_page: int) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            return [_summary(r) for r in self._store.list(conn, per_page, page * per_page)]

    def delete(self, profile_uuid: str, actor: str) -> None:
        with self._db.transaction() as conn:
            row = self._store.delete(conn, profile_uuid)
            if row is None:
                raise NotFound(f"Configuration profile {profile_uuid} was not found")
            self._activities.record(conn, "deleted_configuration_profile", actor,
                                    {"profile_name": row["name"],
                                     "profile_identifier": row["identifier"]})
        self._changed("deleted", profile_uuid)

    def _changed(self, action: str, profile_uuid: str) -> None:
        event = {"kind": "profile", "action": action, "profile_uuid": profile_uuid}
        try:
            self._publisher.publish(bus.CONFIG_CHANGED, event)
        except Exception:  # noqa: BLE001 - the processor's periodic pass repairs a lost event
            log.exception("could not publish config.changed", extra={"event": event})


class HostProfileDirectory:
    """A host's profile statuses (host_profiles belongs to the processor; read only here)."""

    def __init__(self, db):
        self._db = db

    def for_host(self, host_uuid: str) -> list[dict[str, Any]]:
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM hosts WHERE uuid = %s", (host_uuid,)).fetchone() is None:
                raise NotFound(f"Host {host_uuid} was not found")
            rows = conn.execute(
                "SELECT hp.profile_uuid, COALESCE(p.name, hp.profile_name) AS name, hp.identifier, "
                "hp.operation_type, hp.status, hp.detail FROM host_profiles hp "
                "LEFT JOIN profiles p ON p.uuid = hp.profile_uuid WHERE hp.host_uuid = %s "
                "ORDER BY hp.created_at, hp.profile_uuid", (host_uuid,)).fetchall()
        return [{"profile_uuid": r["profile_uuid"], "name": r["name"], "identifier": r["identifier"],
                 "operation_type": r["operation_type"], "status": r["status"], "detail": r["detail"]}
                for r in rows]
