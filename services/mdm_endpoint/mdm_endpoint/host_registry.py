"""gRPC HostRegistry: admin-config asks mdm-endpoint (the hosts table's owner) to forget a host."""

from __future__ import annotations

import logging

import grpc

from mdmscep.v1 import host_registry_pb2, host_registry_pb2_grpc
from mdmscep_common import bus

log = logging.getLogger(__name__)


class HostRegistry:
    def __init__(self, db, publisher):
        self._db = db
        self._publisher = publisher

    def delete_host(self, host_uuid: str) -> bool:
        with self._db.transaction() as conn:
            # Commands go with it (ON DELETE CASCADE); nothing is sent to the host.
            deleted = conn.execute("DELETE FROM hosts WHERE uuid = %s", (host_uuid,)).rowcount == 1
        if deleted:
            log.info("host deleted", extra={"host_uuid": host_uuid})
            self._publisher.publish(bus.HOST_DELETED, {"host_uuid": host_uuid})
        return deleted


class HostRegistryServicer(host_registry_pb2_grpc.HostRegistryServicer):
    def __init__(self, registry: HostRegistry):
        self._registry = registry

    def DeleteHost(self, request, context):  # noqa: N802 - gRPC method name
        if not request.host_uuid or len(request.host_uuid) > 64:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "host_uuid is required")
        return host_registry_pb2.DeleteHostResponse(
            deleted=self._registry.delete_host(request.host_uuid))
