"""gRPC HostRegistry: what others learn about hosts from mdm-endpoint (the hosts table's owner),
and their one change to it, forgetting a host. admin-config is the only caller."""

from __future__ import annotations

import logging

import grpc

from mdmscep.v1 import host_registry_pb2, host_registry_pb2_grpc
from mdmscep_common import bus
from mdmscep_common.outbox import Events

from .host_facts import MAX_FACT_CHARS, PLATFORM_PREFIXES
from .store import HostRecord, HostStore

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 100
MAX_HOST_UUIDS = 1000
MAX_PER_PAGE = 1000


class InvalidRequest(ValueError):
    """A request HostRegistry cannot answer as asked (INVALID_ARGUMENT)."""


class HostRegistry:
    """The registry's logic (no gRPC types)."""

    def __init__(self, db, events: Events, hosts: HostStore | None = None):
        self._db = db
        self._events = events  # the outbox
        self._hosts = hosts or HostStore()

    def delete_host(self, host_uuid: str) -> bool:
        with self._db.transaction() as conn:
            # Nothing is sent to the host: it can enroll again.
            deleted = self._hosts.delete(conn, host_uuid)
            if deleted:
                self._events.add(conn, bus.HOST_DELETED, {"host_uuid": host_uuid})
        if deleted:
            log.info("host deleted", extra={"host_uuid": host_uuid})
        return deleted

    def list_hosts(self, query: str, host_uuids: list[str], page: int, per_page: int,
                   facts: dict[str, str] | None = None) -> tuple[list[HostRecord], int]:
        """`facts`: host facts (model, os_version, product_name, platform) matched exactly."""
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is at most {MAX_QUERY_CHARS} characters")
        for name, value in (facts or {}).items():
            if len(value) > MAX_FACT_CHARS:
                raise InvalidRequest(f"{name} is at most {MAX_FACT_CHARS} characters")
        if (facts or {}).get("platform") and facts["platform"] not in PLATFORM_PREFIXES:
            raise InvalidRequest(f"platform is one of {', '.join(sorted(PLATFORM_PREFIXES))}")
        _check_host_uuids(host_uuids)
        if page < 0:
            raise InvalidRequest("page starts at 0")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"per_page is 1 to {MAX_PER_PAGE}")
        with self._db.transaction() as conn:
            return self._hosts.list_hosts(conn, query, host_uuids, per_page, page * per_page,
                                          facts)

    def get_hosts(self, host_uuids: list[str]) -> list[HostRecord]:
        _check_host_uuids(host_uuids)
        if not host_uuids:
            return []
        with self._db.transaction() as conn:
            return self._hosts.hosts_by_uuid(conn, host_uuids)


def _check_host_uuids(host_uuids: list[str]) -> None:
    if len(host_uuids) > MAX_HOST_UUIDS:
        raise InvalidRequest(f"at most {MAX_HOST_UUIDS} host_uuids per call")


def _host(record: HostRecord) -> host_registry_pb2.Host:
    # A NULL time leaves the Timestamp unset.
    return host_registry_pb2.Host(
        uuid=record.uuid, serial_number=record.serial_number, enrolled=record.enrolled,
        last_seen_at=record.last_seen_at, device_name=record.device_name, model=record.model,
        os_version=record.os_version, enrolled_at=record.enrolled_at,
        push_token_invalid=record.push_token_invalid, product_name=record.product_name,
        platform=record.platform, facts_updated_at=record.facts_updated_at)


class HostRegistryServicer(host_registry_pb2_grpc.HostRegistryServicer):
    def __init__(self, registry: HostRegistry):
        self._registry = registry

    def DeleteHost(self, request, context):  # noqa: N802 - gRPC method name
        if not request.host_uuid or len(request.host_uuid) > 64:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "host_uuid is required")
        return host_registry_pb2.DeleteHostResponse(
            deleted=self._registry.delete_host(request.host_uuid))

    def ListHosts(self, request, context):  # noqa: N802 - gRPC method name
        try:
            hosts, total = self._registry.list_hosts(
                request.query, list(request.host_uuids), request.page, request.per_page,
                {"model": request.model, "os_version": request.os_version,
                 "product_name": request.product_name, "platform": request.platform})
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return host_registry_pb2.ListHostsResponse(hosts=[_host(h) for h in hosts], total=total)

    def GetHosts(self, request, context):  # noqa: N802 - gRPC method name
        try:
            hosts = self._registry.get_hosts(list(request.host_uuids))
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return host_registry_pb2.GetHostsResponse(hosts=[_host(h) for h in hosts])
