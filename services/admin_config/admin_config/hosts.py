"""Hosts as admins see them. Hosts are mdm-endpoint's (gRPC HostRegistry) and their deliveries
the profile-processor's (gRPC DeliveryDirectory): admin-config asks both, and records the admin's
actions in its own activities."""

from __future__ import annotations

from typing import Any

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


def _host(host: RegisteredHost) -> dict[str, Any]:
    # The list's shape is the contract's; the facts are in the detail (and filter the list).
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


class HostDirectory:
    def __init__(self, db, registry: HostRegistryClient, deliveries: DeliveryDirectoryClient,
                 activities=None):
        self._db = db
        self._registry = registry
        self._deliveries = deliveries
        self._activities = activities

    def list(self, page: int, per_page: int, status: str | None = None,
             profile_uuid: str | None = None, query: str | None = None,
             facts: dict[str, str | None] | None = None) -> tuple[list[dict[str, Any]], int]:
        """Hosts; `status` (with `profile_uuid`: of that profile's delivery, else of any
        delivery), `profile_uuid` (hosts with a delivery of it), `query` (part of the serial
        number or UUID, any case) and `facts` (model, os_version, product_name, platform: each
        exactly) narrow the list. In enrollment order, or in host UUID order when a delivery
        narrows it (the processor pages those)."""
        facts = _checked_facts(facts)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                             [{"name": "status", "reason": "unknown status"}])
        if query is not None and len(query) > MAX_QUERY_CHARS:
            raise BadRequest("query is too long", [{"name": "query", "reason": "at most 100 characters"}])
        if status is None and profile_uuid is None:
            hosts, total = self._registry.list_hosts(page, per_page, query or "", facts=facts)
            return [_host(h) for h in hosts], total
        uuids, total = self._with_deliveries(status or "", profile_uuid or "", query or "",
                                             facts, page, per_page)
        known = self._registry.get_hosts(uuids)
        # A host forgotten a moment ago may still have deliveries until the processor hears of
        # it: it is left out of the page.
        return [_host(known[u]) for u in uuids if u in known], total

    def _with_deliveries(self, status: str, profile_uuid: str, query: str, facts: dict[str, str],
                         page: int, per_page: int) -> tuple[list[str], int]:
        """A page of the UUIDs of hosts with a matching delivery (and matching `query` and
        `facts`, which mdm-endpoint knows), in host UUID order, and how many there are."""
        if not query and not facts:
            return self._deliveries.hosts_with_deliveries(profile_uuid, status, page, per_page)
        matching, count = self._registry.list_hosts(0, MAX_HOST_UUIDS_PER_CALL, query,
                                                    facts=facts)
        if count <= MAX_HOST_UUIDS_PER_CALL:
            if not matching:
                return [], 0  # an empty host_uuids would mean every host
            return self._deliveries.hosts_with_deliveries(profile_uuid, status, page, per_page,
                                                          [h.uuid for h in matching])
        # A query matching many hosts: walk the hosts with such deliveries, keeping those the
        # query matches, so the total counts every one.
        kept: list[str] = []
        walked = 0
        while True:
            uuids, total = self._deliveries.hosts_with_deliveries(
                profile_uuid, status, walked // MAX_PER_PAGE, MAX_PER_PAGE)
            if uuids:
                matched, _ = self._registry.list_hosts(0, MAX_PER_PAGE, query, uuids, facts)
                names = {h.uuid for h in matched}
                kept.extend(u for u in uuids if u in names)
            walked += MAX_PER_PAGE
            if len(uuids) < MAX_PER_PAGE or walked >= total:
                break
        return kept[page * per_page:(page + 1) * per_page], len(kept)

    def detail(self, host_uuid: str) -> dict[str, Any]:
        host = require_host(self._registry, host_uuid)
        counts = self._deliveries.count_deliveries(host_uuid=host_uuid)
        return {**_host(host), "device_name": host.device_name, "model": host.model,
                "os_version": host.os_version, "product_name": host.product_name,
                "platform": host.platform, "enrolled_at": rfc3339(host.enrolled_at),
                "push_token_invalid": host.push_token_invalid,
                "facts_updated_at": rfc3339(host.facts_updated_at),
                "profiles": {**{s: 0 for s in STATUSES}, **counts}}

    def delete(self, host_uuid: str, actor: str) -> None:
        serial = require_host(self._registry, host_uuid).serial_number
        if not self._registry.delete_host(host_uuid):
            raise NotFound(f"Host {host_uuid} was not found")
        with self._db.transaction() as conn:
            self._activities.record(conn, "deleted_host", actor,
                                    {"host_uuid": host_uuid, "serial_number": serial})
