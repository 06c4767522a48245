"""Hosts as admins see them. Hosts are mdm-endpoint's (gRPC HostRegistry) and their deliveries
the profile-processor's (gRPC DeliveryDirectory): admin-config asks both, adds the team each host
is in (its own `host_teams`), and records the admin's actions in its own activities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from mdmscep_common.outbox import Events
from mdmscep_common.timefmt import rfc3339

from .delivery_directory_client import DeliveryDirectoryClient
from .errors import BadRequest, NotFound
from .host_registry_client import (
    HOST_FACTS,
    MAX_FACT_CHARS,
    PLATFORMS,
    HostRegistryClient,
    RegisteredHost,
)
from .owner_client import MAX_HOST_UUIDS_PER_CALL, MAX_PER_PAGE
from .scope_events import announce_host_teams, announce_label
from .store import LabelStore, TeamStore

log = logging.getLogger(__name__)

STATUSES = ("pending", "verifying", "verified", "failed")
MAX_QUERY_CHARS = 100
# mdm-endpoint accepts no longer UDID at enrollment: a longer one names no host.
MAX_UDID_CHARS = 64


def require_host(registry: HostRegistryClient, host_uuid: str) -> RegisteredHost:
    """The host as mdm-endpoint knows it; NotFound (404) when it does not."""
    host = registry.get_hosts([host_uuid]).get(host_uuid) if len(host_uuid) <= MAX_UDID_CHARS else None
    if host is None:
        raise NotFound(f"Host {host_uuid} was not found")
    return host


MAX_UNKNOWN_NAMED = 20


def checked_host_uuids(value: Any, field: str) -> list[str]:
    """A JSON list of host UUIDs, each once in the order given; BadRequest naming `field` for
    anything else."""
    if not isinstance(value, list) or any(not isinstance(h, str) or not h or not h.isprintable()
                                          for h in value):
        raise BadRequest(f"{field} must be a list of host UUIDs",
                         [{"name": field, "reason": "a list of host UUIDs (printable text)"}])
    return list(dict.fromkeys(value))


def require_hosts(registry: HostRegistryClient, host_uuids: list[str], field: str) -> None:
    """BadRequest naming the hosts mdm-endpoint does not know among `host_uuids`."""
    asked = [u for u in host_uuids if len(u) <= MAX_UDID_CHARS]
    known = registry.get_hosts(asked) if asked else {}
    unknown = [u for u in host_uuids if u not in known]
    if unknown:
        named = ", ".join(u[:MAX_UDID_CHARS] for u in unknown[:MAX_UNKNOWN_NAMED])
        if len(unknown) > MAX_UNKNOWN_NAMED:
            named += f" and {len(unknown) - MAX_UNKNOWN_NAMED} more"
        raise BadRequest(f"Unknown host(s): {named}",
                         [{"name": field, "reason": f"unknown host(s): {named}"}])


def _host(host: RegisteredHost) -> dict[str, Any]:
    # The list's shape is the contract's (HostDirectory._shown adds the team); the facts are in
    # the detail (and filter the list).
    return {"uuid": host.uuid, "serial_number": host.serial_number, "enrolled": host.enrolled,
            "last_seen_at": rfc3339(host.last_seen_at)}


def _checked_facts(facts: dict[str, str | None] | None) -> dict[str, str]:
    """The host facts a list is narrowed by (empty ones left out), or BadRequest."""
    given = {name: value for name, value in (facts or {}).items() if value}
    for name, value in given.items():
        if name not in HOST_FACTS:
            raise BadRequest(f"unknown host fact {name}", [{"name": name, "reason": "unknown"}])
        if len(value) > MAX_FACT_CHARS:
            raise BadRequest(f"{name} is too long",
                             [{"name": name, "reason": f"at most {MAX_FACT_CHARS} characters"}])
    if given.get("platform", PLATFORMS[0]) not in PLATFORMS:
        raise BadRequest(f"platform must be one of {', '.join(PLATFORMS)}",
                         [{"name": "platform", "reason": "unknown platform"}])
    return given


@dataclass(frozen=True)
class _TeamFilter:
    """Hosts in `uuids` (`inside`), or hosts not in them (no team: `uuids` are those in one)."""
    uuids: frozenset[str]
    inside: bool

    def admits(self, host_uuid: str) -> bool:
        return (host_uuid in self.uuids) == self.inside


class HostDirectory:
    def __init__(self, db, registry: HostRegistryClient, deliveries: DeliveryDirectoryClient,
                 activities=None, *, teams: TeamStore | None = None,
                 labels: LabelStore | None = None, events: Events | None = None):
        self._db = db
        self._registry = registry
        self._deliveries = deliveries
        self._activities = activities
        self._teams = teams or TeamStore()
        self._labels = labels or LabelStore()
        self._events = events

    def list(self, page: int, per_page: int, status: str | None = None,
             profile_uuid: str | None = None, query: str | None = None,
             facts: dict[str, str | None] | None = None,
             team: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Hosts; `status` (with `profile_uuid`: of that profile's delivery, else of any
        delivery), `profile_uuid` (hosts with a delivery of it), `query` (part of the serial
        number or UUID, any case), `facts` (model, os_version, product_name, platform: each
        exactly) and `team` (a team's id; 0: hosts in no team) narrow the list. In enrollment
        order, or in host UUID order when a delivery narrows it (the processor pages those)."""
        facts = _checked_facts(facts)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                             [{"name": "status", "reason": "unknown status"}])
        if query is not None and len(query) > MAX_QUERY_CHARS:
            raise BadRequest("query is too long", [{"name": "query", "reason": "at most 100 characters"}])
        within = self._team_filter(team)
        if status is None and profile_uuid is None:
            if within is None:
                hosts, total = self._registry.list_hosts(page, per_page, query or "", facts=facts)
            elif within.inside and len(within.uuids) <= MAX_HOST_UUIDS_PER_CALL:
                if not within.uuids:
                    return [], 0  # an empty host_uuids would mean every host
                hosts, total = self._registry.list_hosts(page, per_page, query or "",
                                                         sorted(within.uuids), facts)
            else:
                hosts, total = self._walk_hosts(query or "", facts, within, page, per_page)
            return self._shown(hosts), total
        uuids, total = self._with_deliveries(status or "", profile_uuid or "", query or "",
                                             facts, page, per_page, within)
        known = self._registry.get_hosts(uuids)
        # A host forgotten a moment ago may still have deliveries until the processor hears of
        # it: it is left out of the page.
        return self._shown([known[u] for u in uuids if u in known]), total

    def _team_filter(self, team: int | None) -> _TeamFilter | None:
        if team is None:
            return None
        with self._db.transaction() as conn:
            if team == 0:
                assigned = self._teams.hosts_in_any_team(conn)
                return _TeamFilter(frozenset(assigned), inside=False) if assigned else None
            if self._teams.get(conn, team) is None:
                raise BadRequest(f"Team {team} does not exist",
                                 [{"name": "team_id", "reason": "no such team"}])
            return _TeamFilter(frozenset(self._teams.hosts(conn, team)), inside=True)

    def _shown(self, hosts: list[RegisteredHost]) -> list[dict[str, Any]]:
        """The hosts as the API shows them, each with its team. The hosts are mdm-endpoint's:
        while admin-config's own database is away they are shown without `team_id`."""
        if not hosts:
            return []
        try:
            with self._db.transaction() as conn:
                teams = self._teams.of_hosts(conn, [h.uuid for h in hosts])
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("hosts shown without their teams: the database is unavailable",
                        extra={"error": exc.__class__.__name__})
            return [_host(h) for h in hosts]
        return [{**_host(h), "team_id": teams.get(h.uuid)} for h in hosts]

    def _walk_hosts(self, query: str, facts: dict[str, str], within: _TeamFilter, page: int,
                    per_page: int) -> tuple[list[RegisteredHost], int]:
        """A page of the hosts matching `query` and `facts` that `within` admits, walking every
        matching host (a large team, or no team), so the total counts every one."""
        kept: list[RegisteredHost] = []
        walked = 0
        while True:
            hosts, total = self._registry.list_hosts(walked // MAX_PER_PAGE, MAX_PER_PAGE, query,
                                                     facts=facts)
            kept.extend(h for h in hosts if within.admits(h.uuid))
            walked += MAX_PER_PAGE
            if len(hosts) < MAX_PER_PAGE or walked >= total:
                break
        return kept[page * per_page:(page + 1) * per_page], len(kept)

    def _with_deliveries(self, status: str, profile_uuid: str, query: str, facts: dict[str, str],
                         page: int, per_page: int,
                         within: _TeamFilter | None = None) -> tuple[list[str], int]:
        """A page of the UUIDs of hosts with a matching delivery (and matching `query` and
        `facts`, which mdm-endpoint knows, and admitted by `within`), in host UUID order, and
        how many there are."""
        if within is not None and within.inside and len(within.uuids) <= MAX_HOST_UUIDS_PER_CALL:
            candidates = sorted(within.uuids)
            if candidates and (query or facts):
                matched, _ = self._registry.list_hosts(0, MAX_HOST_UUIDS_PER_CALL, query,
                                                       candidates, facts)
                candidates = [h.uuid for h in matched]
            if not candidates:
                return [], 0  # an empty host_uuids would mean every host
            return self._deliveries.hosts_with_deliveries(profile_uuid, status, page, per_page,
                                                          candidates)
        if within is None:
            if not query and not facts:
                return self._deliveries.hosts_with_deliveries(profile_uuid, status, page, per_page)
            matching, count = self._registry.list_hosts(0, MAX_HOST_UUIDS_PER_CALL, query,
                                                        facts=facts)
            if count <= MAX_HOST_UUIDS_PER_CALL:
                if not matching:
                    return [], 0  # an empty host_uuids would mean every host
                return self._deliveries.hosts_with_deliveries(profile_uuid, status, page,
                                                              per_page,
                                                              [h.uuid for h in matching])
        # A query matching many hosts, or a large team (or no team): walk the hosts with such
        # deliveries, keeping those the query matches and the team admits, so the total counts
        # every one.
        kept: list[str] = []
        walked = 0
        while True:
            uuids, total = self._deliveries.hosts_with_deliveries(
                profile_uuid, status, walked // MAX_PER_PAGE, MAX_PER_PAGE)
            admitted = [u for u in uuids if within is None or within.admits(u)]
            if admitted and (query or facts):
                matched, _ = self._registry.list_hosts(0, MAX_PER_PAGE, query, admitted, facts)
                names = {h.uuid for h in matched}
                admitted = [u for u in admitted if u in names]
            kept.extend(admitted)
            walked += MAX_PER_PAGE
            if len(uuids) < MAX_PER_PAGE or walked >= total:
                break
        return kept[page * per_page:(page + 1) * per_page], len(kept)

    def detail(self, host_uuid: str) -> dict[str, Any]:
        host = require_host(self._registry, host_uuid)
        counts = self._deliveries.count_deliveries(host_uuid=host_uuid)
        return {**self._shown([host])[0], "device_name": host.device_name, "model": host.model,
                "os_version": host.os_version, "product_name": host.product_name,
                "platform": host.platform, "enrolled_at": rfc3339(host.enrolled_at),
                "push_token_invalid": host.push_token_invalid,
                "facts_updated_at": rfc3339(host.facts_updated_at),
                "profiles": {**{s: 0 for s in STATUSES}, **counts}}

    def delete(self, host_uuid: str, actor: str) -> None:
        """Forget the host: mdm-endpoint deletes it; admin-config takes it out of its team and
        its manual labels (announced), so a host enrolling again with this UUID starts in none."""
        serial = require_host(self._registry, host_uuid).serial_number
        if not self._registry.delete_host(host_uuid):
            raise NotFound(f"Host {host_uuid} was not found")
        with self._db.transaction() as conn:
            self._activities.record(conn, "deleted_host", actor,
                                    {"host_uuid": host_uuid, "serial_number": serial})
            if self._events is not None:
                announce_host_teams(self._events, conn,
                                    self._teams.assign(conn, [host_uuid], None), None)
                for label_id in self._labels.manual_of_host(conn, host_uuid):
                    self._labels.drop_host(conn, label_id, host_uuid)
                    self._labels.touch(conn, label_id)
                    announce_label(self._events, conn, "edited", label_id,
                                   self._labels.get(conn, label_id))
