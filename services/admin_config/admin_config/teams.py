"""Teams (Fleet's): a host is in at most one team, none until an admin transfers it; a profile is
for the hosts of its team (no team: for hosts in none). Which team a host is in is admin-config's
(`host_teams`); the hosts themselves are mdm-endpoint's, checked through HostRegistry. Each host
whose team changes is announced to the processor (config.changed, kind host_team), in the
transaction of the change."""

from __future__ import annotations

from typing import Any

from mdmscep_common.outbox import Events

from .configuration_profiles import ProfileService
from .errors import BadRequest, Conflict, NotFound, field_error
from .host_registry_client import HostRegistryClient
from .hosts import checked_host_uuids, require_hosts
from .scope_events import announce_host_teams
from .store import ActivityStore, NameTaken, ProfileStore, TeamStore

NAME_MAX_CHARS = 255


def checked_name(name: Any, what: str) -> str:
    """A team's or label's name: printable text, 1-255 characters, without the spaces around
    it."""
    if not isinstance(name, str) or not name.strip():
        raise field_error(BadRequest, "name", f"A {what} needs a name")
    name = name.strip()
    if len(name) > NAME_MAX_CHARS or not name.isprintable():
        raise field_error(BadRequest, "name", f"A {what} name is at most {NAME_MAX_CHARS} "
                                              "printable characters")
    return name


def _team(row: dict[str, Any]) -> dict[str, Any]:
    team = {"id": row["id"], "name": row["name"]}
    if "host_count" in row:
        team["host_count"] = row["host_count"]
    return team


class TeamService:
    def __init__(self, db, store: TeamStore, activities: ActivityStore, events: Events, *,
                 registry: HostRegistryClient, profiles: ProfileService,
                 profile_store: ProfileStore):
        self._db = db
        self._store = store
        self._activities = activities
        self._events = events
        self._registry = registry
        self._profiles = profiles
        self._profile_store = profile_store

    def create(self, name: Any, actor: str) -> dict[str, Any]:
        name = checked_name(name, "team")
        with self._db.transaction() as conn:
            try:
                row = self._store.insert(conn, name)
            except NameTaken:
                raise field_error(Conflict, "name", f"A team named {name} already exists") from None
            self._activities.record(conn, "created_team", actor,
                                    {"team_id": row["id"], "team_name": name})
        return _team(row)

    def list(self, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        with self._db.transaction() as conn:
            return ([_team(r) for r in self._store.list(conn, per_page, page * per_page)],
                    self._store.count(conn))

    def delete(self, team_id: int, actor: str) -> None:
        """Fleet's semantics: the team's profiles are deleted (as DELETE
        /configuration_profiles/{uuid} does), its hosts go to no team; one transaction."""
        with self._db.transaction() as conn:
            team = self._store.get(conn, team_id, lock="UPDATE")
            if team is None:
                raise NotFound(f"Team {team_id} was not found")
            for profile_uuid in self._profile_store.of_team(conn, team_id):
                self._profiles.delete_within(conn, profile_uuid, actor)
            announce_host_teams(self._events, conn, self._store.empty(conn, team_id), None)
            self._store.delete(conn, team_id)
            self._activities.record(conn, "deleted_team", actor,
                                    {"team_id": team_id, "team_name": team["name"]})

    def transfer(self, team_id: Any, hosts: Any, actor: str) -> dict[str, int]:
        """Put the hosts in team `team_id` (None or 0: in no team). Every host must exist and
        the team too, else nothing changes. Returns how many hosts were named and moved."""
        if team_id is not None and (isinstance(team_id, bool) or not isinstance(team_id, int)):
            raise field_error(BadRequest, "team_id", "team_id must be a team's id or null")
        if team_id == 0:
            team_id = None
        host_uuids = checked_host_uuids(hosts, "hosts")
        if not host_uuids:
            raise field_error(BadRequest, "hosts", "Name at least one host")
        if team_id is not None:
            with self._db.transaction() as conn:
                self._require_team(conn, team_id)
        # No connection is held while mdm-endpoint answers.
        require_hosts(self._registry, host_uuids, "hosts")
        with self._db.transaction() as conn:
            team = self._require_team(conn, team_id) if team_id is not None else None
            moved = self._store.assign(conn, host_uuids, team_id)
            announce_host_teams(self._events, conn, moved, team_id)
            self._activities.record(conn, "transferred_hosts", actor,
                                    {"team_id": team_id,
                                     "team_name": team["name"] if team else None,
                                     "host_count": len(host_uuids)})
        return {"hosts": len(host_uuids), "moved": len(moved)}

    def _require_team(self, conn, team_id: int) -> dict[str, Any]:
        # FOR SHARE: the team stays until the hosts are in it.
        team = self._store.get(conn, team_id, lock="SHARE")
        if team is None:
            raise field_error(BadRequest, "team_id", f"Team {team_id} does not exist")
        return team
