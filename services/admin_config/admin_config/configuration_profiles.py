"""Configuration profiles: upload (validated, with a scope: a team and a label rule), list,
delete; each change tells the processor. Their deliveries are the processor's (DeliveryDirectory)
and hosts mdm-endpoint's (HostRegistry): admin-config asks them."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from mdmscep_common import bus, config_events
from mdmscep_common.outbox import Events
from mdmscep_common.timefmt import rfc3339

from .delivery_directory_client import DeliveryDirectoryClient
from .errors import BadRequest, Conflict, NotFound
from .host_registry_client import HostRegistryClient
from .hosts import require_host
from .profile_validation import validate_profile
from .store import (
    ActivityStore,
    CertificateAuthorityNames,
    LabelStore,
    NameTaken,
    ProfileStore,
    TeamStore,
)

log = logging.getLogger(__name__)

STATUSES = ("pending", "verifying", "verified", "failed")


# The upload's label fields (Fleet's names) → the modes of config_events.LABEL_MODES.
LABEL_FIELDS = {f"labels_{mode}": mode for mode in config_events.LABEL_MODES}
INCLUDE_FIELDS = ("labels_include_all", "labels_include_any")


def _summary(row: dict[str, Any], labels: dict[str, list[str]]) -> dict[str, Any]:
    """A profile as the API shows it; `labels`: its label rule by name, {mode: [names]}."""
    return {"profile_uuid": row["uuid"], "name": row["name"], "identifier": row["identifier"],
            "created_at": rfc3339(row["created_at"]), "team_id": row["team_id"],
            **{field: labels.get(mode, []) for field, mode in LABEL_FIELDS.items()}}


def checked_label_fields(labels: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The upload's label fields (LABEL_FIELDS → names), each name once; BadRequest for an
    unknown field, a name that is not text, both include kinds, or one label in two fields."""
    given: dict[str, list[str]] = {}
    for field, names in (labels or {}).items():
        if field not in LABEL_FIELDS:
            raise BadRequest(f"unknown label field {field}", [{"name": field, "reason": "unknown"}])
        if any(not isinstance(n, str) or not n or "\x00" in n for n in names):
            raise BadRequest(f"{field} must be label names",
                             [{"name": field, "reason": "a label name is non-empty text"}])
        if names:
            given[field] = list(dict.fromkeys(names))
    if all(field in given for field in INCLUDE_FIELDS):
        message = "Only one of labels_include_all and labels_include_any may be given"
        raise BadRequest(message, [{"name": field, "reason": message} for field in INCLUDE_FIELDS])
    seen: dict[str, str] = {}
    for field, names in given.items():
        for name in names:
            if name in seen:
                message = f"Label {name} is in both {seen[name]} and {field}"
                raise BadRequest(message, [{"name": field, "reason": message}])
            seen[name] = field
    return given


class ProfileService:
    def __init__(self, db, store: ProfileStore, cas: CertificateAuthorityNames,
                 activities: ActivityStore, events: Events, *, registry: HostRegistryClient,
                 deliveries: DeliveryDirectoryClient, teams: TeamStore | None = None,
                 labels: LabelStore | None = None):
        self._db = db
        self._store = store
        self._cas = cas
        self._activities = activities
        self._events = events  # the outbox: events commit with the change they announce
        self._registry = registry
        self._deliveries = deliveries
        self._teams = teams or TeamStore()
        self._labels = labels or LabelStore()

    def upload(self, raw: bytes, actor: str, team_id: int | None = None,
               labels: dict[str, list[str]] | None = None) -> str:
        """Store a profile for the hosts of team `team_id` (None: of no team) that satisfy its
        label rule (`labels`: LABEL_FIELDS → label names)."""
        fields = checked_label_fields(labels)
        with self._db.transaction() as conn:
            known: dict[str, int] = {}

            def ca_exists(name: str) -> bool:
                known.update(self._cas.ids_by_name(conn, [name]))
                return name in known

            profile = validate_profile(raw, ca_exists)
            # Locked against deletion until this commits (FOR SHARE).
            if team_id is not None and self._teams.get(conn, team_id, lock="SHARE") is None:
                raise BadRequest(f"Team {team_id} does not exist",
                                 [{"name": "team_id", "reason": "no such team"}])
            scope = self._label_rule(conn, fields)
            if self._store.identifier_exists(conn, profile.identifier, team_id):
                raise self._duplicate(profile.identifier, team_id)
            profile_uuid = str(uuid.uuid4())
            try:
                self._store.insert(conn, profile_uuid, profile.name, profile.identifier,
                                   profile.payload_uuid, raw, hashlib.sha256(raw).digest(),
                                   profile.has_scep_payload,
                                   [known[name] for name in sorted(profile.ca_names)],
                                   team_id, scope)
            except NameTaken:
                raise self._duplicate(profile.identifier, team_id) from None
            details = {"profile_name": profile.name, "profile_identifier": profile.identifier}
            if team_id is not None:
                details["team_id"] = team_id
            self._activities.record(conn, "created_configuration_profile", actor, details)
            self._changed(conn, "added", profile_uuid)
        return profile_uuid

    def _label_rule(self, conn, fields: dict[str, list[str]]) -> list[tuple[str, int]]:
        """(mode, label id) of each label named; BadRequest naming the field of unknown ones."""
        names = [n for field_names in fields.values() for n in field_names]
        ids = self._labels.ids_by_name(conn, names) if names else {}
        for field, field_names in fields.items():
            unknown = [n for n in field_names if n not in ids]
            if unknown:
                listed = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise BadRequest(f"Unknown label(s) in {field}: {listed}",
                                 [{"name": field, "reason": f"unknown label(s): {listed}"}])
        return [(LABEL_FIELDS[field], ids[n]) for field, field_names in fields.items()
                for n in field_names]

    @staticmethod
    def _duplicate(identifier: str, team_id: int | None = None) -> BadRequest:
        message = f"A profile with PayloadIdentifier {identifier} already exists" + (
            f" in team {team_id}" if team_id is not None else "")
        return BadRequest(message, [{"name": "profile", "reason": message}])

    def list(self, page: int, per_page: int,
             team: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """`team`: None for every profile, 0 for those of no team, else that team's."""
        with self._db.transaction() as conn:
            rows = self._store.list(conn, per_page, page * per_page, team)
            labels = self._store.label_names(conn, [r["uuid"] for r in rows])
            return [_summary(r, labels[r["uuid"]]) for r in rows], self._store.count(conn, team)

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
            self._changed(conn, "edited", profile_uuid)
            return self._described(conn, self._store.get(conn, profile_uuid))

    def _described(self, conn, row: dict[str, Any]) -> dict[str, Any]:
        return _summary(row, self._store.label_names(conn, [row["uuid"]])[row["uuid"]])

    def get(self, profile_uuid: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            return self._described(conn, self._require(conn, profile_uuid))

    def content(self, profile_uuid: str) -> tuple[str, bytes]:
        """The profile's PayloadIdentifier and its bytes as uploaded, unrendered (what GitOps
        export writes and apply compares)."""
        with self._db.transaction() as conn:
            state = self._store.state(conn, profile_uuid)
        if state is None:
            raise NotFound(f"Configuration profile {profile_uuid} was not found")
        return state["identifier"], bytes(state["raw"])

    def _require(self, conn, profile_uuid: str) -> dict[str, Any]:
        row = self._store.get(conn, profile_uuid)
        if row is None:
            raise NotFound(f"Configuration profile {profile_uuid} was not found")
        return row

    def summary(self, profile_uuid: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            self._require(conn, profile_uuid)
        counts = {status: 0 for status in STATUSES}
        counts.update(self._deliveries.count_deliveries(profile_uuid=profile_uuid))
        return {"profile_uuid": profile_uuid, **counts, "total": sum(counts.values())}

    def hosts(self, profile_uuid: str, status: str | None, page: int,
              per_page: int) -> tuple[list[dict[str, Any]], int]:
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                             [{"name": "status", "reason": "unknown status"}])
        with self._db.transaction() as conn:
            self._require(conn, profile_uuid)
        deliveries, total = self._deliveries.deliveries_of_profile(profile_uuid, status or "",
                                                                   page, per_page)
        hosts = self._registry.get_hosts([d.host_uuid for d in deliveries]) if deliveries else {}
        return ([{"host_uuid": d.host_uuid,
                  "serial_number": hosts[d.host_uuid].serial_number if d.host_uuid in hosts else "",
                  "operation_type": d.operation_type, "status": d.status, "detail": d.detail,
                  "updated_at": rfc3339(d.updated_at)} for d in deliveries],
                total)

    def retry_failed(self, profile_uuid: str, actor: str) -> int:
        with self._db.transaction() as conn:
            row = self._require(conn, profile_uuid)
        # No connection is held while the processor answers.
        failed = self._deliveries.count_deliveries(profile_uuid=profile_uuid).get("failed", 0)
        with self._db.transaction() as conn:
            self._activities.record(conn, "retried_configuration_profile", actor,
                                    {"profile_name": row["name"], "hosts": failed})
            self._request_resend(conn, profile_uuid, None, only_failed=True)
        return failed

    def resend(self, host_uuid: str, profile_uuid: str, actor: str) -> None:
        with self._db.transaction() as conn:
            row = self._require(conn, profile_uuid)
        require_host(self._registry, host_uuid)
        delivery = next((d for d in self._deliveries.deliveries_of_host(host_uuid)
                         if d.profile_uuid == profile_uuid), None)
        if delivery is None or delivery.operation_type != "install":
            raise Conflict(f"Host {host_uuid} has no delivery of this profile to re-send "
                           "(not enrolled yet, or being removed)",
                           [{"name": "host_uuid", "reason": "no delivery"}])
        with self._db.transaction() as conn:
            self._activities.record(conn, "resent_configuration_profile", actor,
                                    {"profile_name": row["name"], "host_uuid": host_uuid})
            self._request_resend(conn, profile_uuid, host_uuid, only_failed=False)

    def _request_resend(self, conn, profile_uuid: str, host_uuid: str | None,
                        only_failed: bool) -> None:
        # The processor owns deliveries: it resets the attempt budget and sends at once.
        self._events.add(conn, bus.DELIVERY_RESEND, {"profile_uuid": profile_uuid,
                                                     "host_uuid": host_uuid,
                                                     "only_failed": only_failed})

    def delete(self, profile_uuid: str, actor: str) -> None:
        with self._db.transaction() as conn:
            if not self.delete_within(conn, profile_uuid, actor):
                raise NotFound(f"Configuration profile {profile_uuid} was not found")

    def delete_within(self, conn, profile_uuid: str, actor: str) -> bool:
        """Delete the profile in the caller's transaction (its activity and event with it);
        False when there is none (a team's deletion deletes its profiles so)."""
        row = self._store.delete(conn, profile_uuid)
        if row is None:
            return False
        self._activities.record(conn, "deleted_configuration_profile", actor,
                                {"profile_name": row["name"],
                                 "profile_identifier": row["identifier"]})
        self._changed(conn, "deleted", profile_uuid)
        return True

    def _changed(self, conn, action: str, profile_uuid: str) -> None:
        """config.changed with the profile as committed (none once deleted): the processor's
        copy of it (mdmscep_common.config_events). Called after the row changed."""
        state = None if action == "deleted" else self._store.state(conn, profile_uuid)
        self._events.add(conn, bus.CONFIG_CHANGED,
                         {"kind": config_events.PROFILE, "action": action,
                          "profile_uuid": profile_uuid,
                          "profile": None if state is None else config_events.profile_state(state)})


class HostProfileDirectory:
    """A host's deliveries, as the processor (their owner) lists them."""

    def __init__(self, db, store: ProfileStore, registry: HostRegistryClient,
                 deliveries: DeliveryDirectoryClient):
        self._db = db
        self._store = store
        self._registry = registry
        self._deliveries = deliveries

    def for_host(self, host_uuid: str) -> list[dict[str, Any]]:
        require_host(self._registry, host_uuid)
        deliveries = self._deliveries.deliveries_of_host(host_uuid)
        names = self._store.current_names(self._db, [d.profile_uuid for d in deliveries])
        # A profile renamed since shows its name now; a deleted one (being removed), the name
        # it was delivered with.
        return [{"profile_uuid": d.profile_uuid, "name": names.get(d.profile_uuid, d.profile_name),
                 "identifier": d.identifier, "operation_type": d.operation_type,
                 "status": d.status, "detail": d.detail} for d in deliveries]
