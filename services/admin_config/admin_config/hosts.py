"""Hosts as admins see them. The hosts table belongs to mdm-endpoint: admin-config reads it and
asks mdm-endpoint (gRPC HostRegistry) to delete one."""

from __future__ import annotations

from typing import Any

import grpc

from mdmscep.v1 import host_registry_pb2, host_registry_pb2_grpc
from mdmscep_common.service_tls import MDM_ENDPOINT, ServiceTls
from mdmscep_common.timefmt import rfc3339

from .errors import BadRequest, NotFound, ServiceUnavailable

STATUSES = ("pending", "verifying", "verified", "failed")


class HostRegistryClient:
    def __init__(self, address: str, tls: ServiceTls, timeout: float = 10.0):
        self._channel = tls.channel(address, MDM_ENDPOINT)
        self._stub = host_registry_pb2_grpc.HostRegistryStub(self._channel)
        self._timeout = timeout

    def delete_host(self, host_uuid: str) -> bool:
        try:
            return self._stub.DeleteHost(host_registry_pb2.DeleteHostRequest(host_uuid=host_uuid),
                                         timeout=self._timeout).deleted
        except grpc.RpcError as exc:
            raise ServiceUnavailable("The MDM endpoint is unavailable; try again shortly.",
                                     [{"name": "host_uuid", "reason": exc.code().name}]) from None


def require_host(conn, host_uuid: str) -> None:
    """NotFound (404) unless mdm-endpoint knows the host."""
    if conn.execute("SELECT 1 FROM hosts WHERE uuid = %s", (host_uuid,)).fetchone() is None:
        raise NotFound(f"Host {host_uuid} was not found")


def _host(row: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": row["uuid"], "serial_number": row["serial_number"], "enrolled": row["enrolled"],
            "last_seen_at": rfc3339(row["last_seen_at"])}


class HostDirectory:
    def __init__(self, db, registry: HostRegistryClient | None = None, activities=None):
        self._db = db
        self._registry = registry
        self._activities = activities

    def list(self, page: int, per_page: int, status: str | None = None,
             profile_uuid: str | None = None, query: str | None = None
             ) -> tuple[list[dict[str, Any]], int]:
        """Hosts in enrollment order; `status` (with `profile_uuid`: of that profile's delivery,
        else of any delivery), `profile_uuid` (hosts with a delivery of it) and `query` (part
        of the serial number or UUID, any case) narrow the list."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                             [{"name": "status", "reason": "unknown status"}])
        if query is not None and len(query) > 100:
            raise BadRequest("query is too long", [{"name": "query", "reason": "at most 100 characters"}])
        params = {"status": status, "profile": profile_uuid,
                  "query": f"%{query.lower()}%" if query else None,
                  "limit": per_page, "offset": page * per_page}
        where = """WHERE (%(query)s::text IS NULL OR lower(h.serial_number) LIKE %(query)s
                          OR lower(h.uuid) LIKE %(query)s)
                     AND ((%(status)s::text IS NULL AND %(profile)s::text IS NULL) OR EXISTS (
                          SELECT 1 FROM host_profiles hp WHERE hp.host_uuid = h.uuid
                          AND (%(status)s::text IS NULL OR hp.status = %(status)s)
                          AND (%(profile)s::text IS NULL OR hp.profile_uuid = %(profile)s)))"""
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT h.uuid, h.serial_number, h.enrolled, h.last_seen_at FROM hosts h {where} "
                "ORDER BY h.created_at, h.uuid LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM hosts h {where}", params).fetchone()["n"]
        return [_host(r) for r in rows], total

    def detail(self, host_uuid: str) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT uuid, serial_number, enrolled, last_seen_at, device_name, model, os_version, "
                "enrolled_at, push_token_invalid_at IS NOT NULL AS push_token_invalid "
                "FROM hosts WHERE uuid = %s", (host_uuid,)).fetchone()
            if row is None:
                raise NotFound(f"Host {host_uuid} was not found")
            counts = conn.execute("SELECT status, count(*) AS n FROM host_profiles WHERE host_uuid = %s "
                                  "GROUP BY status", (host_uuid,)).fetchall()
        return {**_host(row), "device_name": row["device_name"], "model": row["model"],
                "os_version": row["os_version"], "enrolled_at": rfc3339(row["enrolled_at"]),
                "push_token_invalid": row["push_token_invalid"],
                "profiles": {**{s: 0 for s in STATUSES}, **{c["status"]: c["n"] for c in counts}}}

    def delete(self, host_uuid: str, actor: str) -> None:
        serial = self.detail(host_uuid)["serial_number"]
        if not self._registry.delete_host(host_uuid):
            raise NotFound(f"Host {host_uuid} was not found")
        with self._db.transaction() as conn:
            self._activities.record(conn, "deleted_host", actor,
                                    {"host_uuid": host_uuid, "serial_number": serial})
