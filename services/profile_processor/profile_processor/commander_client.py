"""Client of mdm-endpoint's gRPC Commander: queue per-host commands in batches."""

from __future__ import annotations

from dataclasses import dataclass

from mdmscep.v1 import commander_pb2, commander_pb2_grpc
from mdmscep_common.service_tls import MDM_ENDPOINT, ServiceTls

BATCH = 1000


@dataclass(frozen=True)
class HostCommand:
    host_uuid: str
    command_uuid: str
    request_type: str
    payload: bytes
    replaces_command_uuid: str = ""


class CommanderClient:
    def __init__(self, address: str, tls: ServiceTls, timeout: float = 30.0):
        self._channel = tls.channel(address, MDM_ENDPOINT, options=[
            ("grpc.max_send_message_length", 256 << 20)])
        self._stub = commander_pb2_grpc.CommanderStub(self._channel)
        self._timeout = timeout

    def enqueue(self, commands: list[HostCommand]) -> int:
        """Queue the commands (idempotent per command UUID); raises grpc.RpcError on failure."""
        queued = 0
        for start in range(0, len(commands), BATCH):
            request = commander_pb2.EnqueueRequest()
            add = request.commands.add  # built in place: HostCommand(...) in a list is copied
            for c in commands[start:start + BATCH]:
                add(host_uuid=c.host_uuid, command_uuid=c.command_uuid,
                    request_type=c.request_type, payload=c.payload,
                    replaces_command_uuid=c.replaces_command_uuid)
            queued += self._stub.Enqueue(request, timeout=self._timeout).queued
        return queued

    def close(self) -> None:
        self._channel.close()
