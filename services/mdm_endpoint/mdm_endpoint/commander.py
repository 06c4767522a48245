"""gRPC Commander: the processor queues per-host commands in batches; we request their pushes."""

from __future__ import annotations

import logging

import grpc

from mdmscep.v1 import commander_pb2, commander_pb2_grpc
from mdmscep_common import bus
from mdmscep_common.mdm_commands import CERTIFICATE_LIST, INSTALL_PROFILE, PROFILE_LIST, REMOVE_PROFILE

from .service import EventRelay
from .store import CommandStore

log = logging.getLogger(__name__)

REQUEST_TYPES = {INSTALL_PROFILE, REMOVE_PROFILE, PROFILE_LIST, CERTIFICATE_LIST}
MAX_COMMANDS_PER_CALL = 50_000
MAX_PAYLOAD_BYTES = 4 << 20
PUSH_HOSTS_PER_MESSAGE = 1000


class Commander:
    """The Commander's logic (no gRPC types), so it can be called and tested directly."""

    def __init__(self, db, commands: CommandStore, publisher):
        self._db = db
        self._commands = commands
        # The commands are committed before the pushes are asked for: a push the broker cannot
        # take now is asked for again when it is back, instead of failing the call (which made
        # the processor re-send with new commands, leaving these queued with codes it never
        # stored).
        self._events = EventRelay(publisher)

    def enqueue(self, commands: list[tuple[str, str, str, bytes]],
                replaces: list[tuple[str, str]]) -> tuple[int, int]:
        with self._db.transaction() as conn:
            queued = self._commands.enqueue(conn, commands, replaces)
        # Push every host named, not only those with new rows: a retried call (after a lost
        # answer or a failed publish) must still wake its hosts.
        hosts = sorted({host for host, *_ in commands})
        for start in range(0, len(hosts), PUSH_HOSTS_PER_MESSAGE):
            self._events.publish(bus.PUSH_REQUESTED,
                                 {"host_uuids": hosts[start:start + PUSH_HOSTS_PER_MESSAGE]})
        return queued, len(hosts)


class CommanderServicer(commander_pb2_grpc.CommanderServicer):
    def __init__(self, commander: Commander):
        self._commander = commander

    def Enqueue(self, request, context):  # noqa: N802 - gRPC method name
        if len(request.commands) > MAX_COMMANDS_PER_CALL:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"at most {MAX_COMMANDS_PER_CALL} commands per call")
        commands, replaces = [], []
        for c in request.commands:
            if not c.host_uuid or not c.command_uuid or c.request_type not in REQUEST_TYPES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "each command needs host_uuid, command_uuid and a known request_type")
            if not c.payload or len(c.payload) > MAX_PAYLOAD_BYTES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload empty or too large")
            commands.append((c.host_uuid, c.command_uuid, c.request_type, bytes(c.payload)))
            if c.replaces_command_uuid:
                replaces.append((c.host_uuid, c.replaces_command_uuid))
        queued, pushed = self._commander.enqueue(commands, replaces)
        return commander_pb2.EnqueueResponse(queued=queued, pushes_requested=pushed)
