"""Configuration profiles: upload (validated), list, delete; each change tells the processor."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from mdmscep_common import bus
from mdmscep_common.timefmt import rfc3339

from .errors import BadRequest, Conflict, NotFound
from .hosts import require_host
from .profile_validation import validate_profile
from .store import ActivityStore, CertificateAuthorityNames, NameTaken, ProfileStore

log = logging.getLogger(__name__)

STATUSES = ("pending", "verifying", "verified", "failed")


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

    def list(self, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        with self._db.transaction() as conn:
            return ([_summary(r) for r in self._store.list(conn, per_page, page * per_page)],
                    self._store.count(conn))

    def replace(self, profile_uuid: str, raw: bytes, actor: str) -> dict[str, Any]:
        """New content for the same PayloadIdentifier: hosts get it as InstallProfile, which
        replaces the installed one, with no RemoveProfile in between (certificates stay)."""
        with self._db.transaction() as conn:
            current = self._store.get(conn, profile_uuid, for_update=True)
            if current is None:
                raise NotFound(f"Configuration profile {profile_uuid} was not found")
            known: dict[str, int] = {}

            def ca_exists(name: str) -> bool:
                known.update(self._cas.ids_by_name(conn, [name]))
                return name in known

            profile = validate_profile(raw, ca_exists)
            if profile.identifier != current["identifier"]:
                message = (f"The new profile's PayloadIdentifier ({profile.identifier}) must be the "
                           f"one it replaces ({current['identifier']})")
                raise BadRequest(message, [{"name": "profile", "reason": message}])
            self._store.replace(conn, profile_uuid, profile.name, profile.payload_uuid, raw,
                                hashlib.sha256(raw).digest(), profile.has_scep_payload,
                                [known[name] for name in sorted(profile.ca_names)])
            self._activities.record(conn, "edited_configuration_profile", actor,
                                    {"profile_name": profile.name,
                                     "profile_identifier": profile.identifier})
            row = self._store.get(conn, profile_uuid)
        self._changed("edited", profile_uuid)
        return _summary(row)

    def _require(self, conn, profile_uuid: str) -> dict[str, Any]:
        row = self._store.get(conn, profile_uuid)
        if row is None:
            raise NotFound(f"Configuration profile {profile_uuid} was not found")
        return row

    def summary(self, profile_uuid: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            self._require(conn, profile_uuid)
            rows = conn.execute(
                "SELECT status, count(*) AS n FROM host_profiles WHERE profile_uuid = %s "
                "AND operation_type = 'install' GROUP BY status", (profile_uuid,)).fetchall()
        counts = {status: 0 for status in STATUSES}
        counts.update({r["status"]: r["n"] for r in rows})
        return {"profile_uuid": profile_uuid, **counts, "total": sum(counts.values())}

    def hosts(self, profile_uuid: str, status: str | None, page: int,
              per_page: int) -> tuple[list[dict[str, Any]], int]:
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                             [{"name": "status", "reason": "unknown status"}])
        params = {"p": profile_uuid, "s": status, "limit": per_page, "offset": page * per_page}
        where = "WHERE hp.profile_uuid = %(p)s AND (%(s)s::text IS NULL OR hp.status = %(s)s)"
        with self._db.transaction() as conn:
            self._require(conn, profile_uuid)
            rows = conn.execute(
                "SELECT hp.host_uuid, h.serial_number, hp.operation_type, hp.status, hp.detail, "
                "hp.updated_at FROM host_profiles hp LEFT JOIN hosts h ON h.uuid = hp.host_uuid "
                f"{where} ORDER BY hp.host_uuid LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM host_profiles hp {where}",
                                 params).fetchone()["n"]
        return ([{"host_uuid": r["host_uuid"], "serial_number": r["serial_number"] or "",
                  "operation_type": r["operation_type"], "status": r["status"],
                  "detail": r["detail"], "updated_at": rfc3339(r["updated_at"])} for r in rows],
                total)

    def retry_failed(self, profile_uuid: str, actor: str) -> int:
        with self._db.transaction() as conn:
            row = self._require(conn, profile_uuid)
            failed = conn.execute(
                "SELECT count(*) AS n FROM host_profiles WHERE profile_uuid = %s "
                "AND operation_type = 'install' AND status = 'failed'", (profile_uuid,)).fetchone()["n"]
            self._activities.record(conn, "retried_configuration_profile", actor,
                                    {"profile_name": row["name"], "hosts": failed})
        self._request_resend(profile_uuid, None, only_failed=True)
        return failed

    def resend(self, host_uuid: str, profile_uuid: str, actor: str) -> None:
        with self._db.transaction() as conn:
            row = self._require(conn, profile_uuid)
            require_host(conn, host_uuid)
            delivery = conn.execute(
                "SELECT operation_type FROM host_profiles WHERE host_uuid = %s AND profile_uuid = %s",
                (host_uuid, profile_uuid)).fetchone()
            if delivery is None or delivery["operation_type"] != "install":
                raise Conflict(f"Host {host_uuid} has no delivery of this profile to re-send "
                               "(not enrolled yet, or being removed)",
                               [{"name": "host_uuid", "reason": "no delivery"}])
            self._activities.record(conn, "resent_configuration_profile", actor,
                                    {"profile_name": row["name"], "host_uuid": host_uuid})
        self._request_resend(profile_uuid, host_uuid, only_failed=False)

    def _request_resend(self, profile_uuid: str, host_uuid: str | None, only_failed: bool) -> None:
        # The processor owns deliveries: it resets the attempt budget and sends at once.
        self._publisher.publish(bus.DELIVERY_RESEND, {"profile_uuid": profile_uuid,
                                                      "host_uuid": host_uuid,
                                                      "only_failed": only_failed})

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
            require_host(conn, host_uuid)
            rows = conn.execute(
                "SELECT hp.profile_uuid, COALESCE(p.name, hp.profile_name) AS name, hp.identifier, "
                "hp.operation_type, hp.status, hp.detail FROM host_profiles hp "
                "LEFT JOIN profiles p ON p.uuid = hp.profile_uuid WHERE hp.host_uuid = %s "
                "ORDER BY hp.created_at, hp.profile_uuid", (host_uuid,)).fetchall()
        return [{"profile_uuid": r["profile_uuid"], "name": r["name"], "identifier": r["identifier"],
                 "operation_type": r["operation_type"], "status": r["status"], "detail": r["detail"]}
                for r in rows]
