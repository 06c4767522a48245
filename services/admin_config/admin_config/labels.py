"""Labels (Fleet's): a manual label lists its hosts; a dynamic label states criteria over host
facts (mdmscep_common.label_criteria), which the profile-processor evaluates for each host. A
profile's label rule names labels (configuration_profiles.py); a label a profile names cannot be
deleted. Each change is announced to the processor (config.changed, kind label), in the
transaction of the change."""

from __future__ import annotations

from typing import Any

from mdmscep_common import label_criteria
from mdmscep_common.outbox import Events

from .errors import BadRequest, Conflict, NotFound, field_error
from .host_registry_client import HostRegistryClient
from .hosts import checked_host_uuids, require_hosts
from .scope_events import announce_label
from .store import ActivityStore, LabelStore, NameTaken, ProfileStore
from .teams import checked_name

MANUAL, DYNAMIC = "manual", "dynamic"


def _label(row: dict[str, Any]) -> dict[str, Any]:
    manual = row["criteria"] is None
    return {"id": row["id"], "name": row["name"],
            "label_membership_type": MANUAL if manual else DYNAMIC,
            "criteria": row["criteria"], "hosts": list(row["hosts"]) if manual else []}


def _criteria(value: Any) -> dict[str, str]:
    try:
        return label_criteria.parse(value)
    except label_criteria.InvalidCriteria as exc:
        name = "criteria" if exc.key == "criteria" else f"criteria.{exc.key}"
        raise BadRequest(f"Invalid criteria: {exc}", [{"name": name, "reason": exc.reason}]) from None


class LabelService:
    def __init__(self, db, store: LabelStore, activities: ActivityStore, events: Events, *,
                 registry: HostRegistryClient, profile_store: ProfileStore):
        self._db = db
        self._store = store
        self._activities = activities
        self._events = events
        self._registry = registry
        self._profile_store = profile_store

    def create(self, body: Any, actor: str) -> dict[str, Any]:
        """`body`: {name, hosts} (a manual label) or {name, criteria} (a dynamic one)."""
        if not isinstance(body, dict):
            raise field_error(BadRequest, "name", "The body must be a JSON object with a name and "
                                                  "hosts or criteria")
        name = checked_name(body.get("name"), "label")
        hosts, criteria = body.get("hosts"), body.get("criteria")
        if hosts is not None and criteria is not None:
            message = ("A label is manual (hosts) or dynamic (criteria), not both")
            raise BadRequest(message, [{"name": "hosts", "reason": message},
                                       {"name": "criteria", "reason": message}])
        if hosts is None and criteria is None:
            message = "Give hosts (a manual label) or criteria (a dynamic label)"
            raise BadRequest(message, [{"name": "hosts", "reason": message}])
        host_uuids: list[str] = []
        if criteria is not None:
            criteria = _criteria(criteria)
        else:
            host_uuids = checked_host_uuids(hosts, "hosts")
            # No connection is held while mdm-endpoint answers.
            require_hosts(self._registry, host_uuids, "hosts")
        with self._db.transaction() as conn:
            try:
                row = self._store.insert(conn, name, criteria)
            except NameTaken:
                raise self._name_taken(name) from None
            if host_uuids:
                self._store.set_hosts(conn, row["id"], host_uuids)
            row = self._store.get(conn, row["id"])
            self._activities.record(conn, "created_label", actor,
                                    {"label_id": row["id"], "label_name": name,
                                     "label_membership_type": _label(row)["label_membership_type"]})
            announce_label(self._events, conn, "added", row["id"], row)
        return _label(row)

    def list(self, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        with self._db.transaction() as conn:
            return ([_label(r) for r in self._store.list(conn, per_page, page * per_page)],
                    self._store.count(conn))

    def edit(self, label_id: int, body: Any, actor: str) -> dict[str, Any]:
        """`body`: {hosts} replaces a manual label's hosts; {name} renames a label."""
        if isinstance(body, dict) and "criteria" in body:
            raise field_error(BadRequest, "criteria", "A label's criteria cannot be changed: "
                                                      "create a new label")
        if not isinstance(body, dict) or ("hosts" not in body and "name" not in body):
            raise field_error(BadRequest, "hosts", "The body must be a JSON object with hosts "
                                                   "(or a new name)")
        name = checked_name(body["name"], "label") if "name" in body else None
        host_uuids = checked_host_uuids(body["hosts"], "hosts") if "hosts" in body else None
        with self._db.transaction() as conn:
            self._require_editable(conn, label_id, host_uuids)
        if host_uuids:
            require_hosts(self._registry, host_uuids, "hosts")
        with self._db.transaction() as conn:
            current = self._require_editable(conn, label_id, host_uuids, for_update=True)
            if name is not None and name != current["name"]:
                try:
                    self._store.rename(conn, label_id, name)
                except NameTaken:
                    raise self._name_taken(name) from None
            if host_uuids is not None:
                self._store.set_hosts(conn, label_id, host_uuids)
            self._store.touch(conn, label_id)
            row = self._store.get(conn, label_id)
            details = {"label_id": label_id, "label_name": row["name"]}
            if row["name"] != current["name"]:
                details["old_label_name"] = current["name"]
            if host_uuids is not None:
                details["host_count"] = len(host_uuids)
            self._activities.record(conn, "edited_label", actor, details)
            announce_label(self._events, conn, "edited", label_id, row)
        return _label(row)

    def _require_editable(self, conn, label_id: int, host_uuids: list[str] | None,
                          for_update: bool = False) -> dict[str, Any]:
        row = self._store.get(conn, label_id, for_update=for_update)
        if row is None:
            raise NotFound(f"Label {label_id} was not found")
        if host_uuids is not None and row["criteria"] is not None:
            raise field_error(BadRequest, "hosts", f"Label {row['name']} is dynamic: its hosts "
                                                   "are those its criteria match")
        return row

    def delete(self, label_id: int, actor: str) -> None:
        with self._db.transaction() as conn:
            row = self._store.get(conn, label_id, for_update=True)
            if row is None:
                raise NotFound(f"Label {label_id} was not found")
            users = self._profile_store.names_using_label(conn, label_id)
            if users:
                raise Conflict(f"Label {row['name']} is used by {len(users)} profile(s): "
                               f"{', '.join(users[:10])}. Delete those profiles first.",
                               [{"name": "id", "reason": "in use by configuration profiles"}])
            self._store.delete(conn, label_id)
            self._activities.record(conn, "deleted_label", actor,
                                    {"label_id": label_id, "label_name": row["name"]})
            announce_label(self._events, conn, "deleted", label_id, None)

    @staticmethod
    def _name_taken(name: str) -> Conflict:
        return field_error(Conflict, "name", f"A label named {name} already exists")
