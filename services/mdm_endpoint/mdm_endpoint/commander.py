"""gRPC Commander: the processor queues per-host commands in batches; we request their pushes
(push.requested, added to the outbox in the transaction that queues the commands).

Only the commands the product sends are queued (accepted_commands), all of a call or none, and
their payloads are sealed before they are stored (command_payloads)."""

from __future__ import annotations

import logging

import grpc

from mdmscep.v1 import commander_pb2, commander_pb2_grpc
from mdmscep_common import bus
from mdmscep_common.crypto import SecretBox
from mdmscep_common.outbox import Events

from .accepted_commands import InvalidCommand, check_command
from .command_payloads import seal_payload
from .store import CommandStore

log = logging.getLogger(__name__)

MAX_COMMANDS_PER_CALL = 50_000
PUSH_HOSTS_PER_MESSAGE = 1000


class Commander:
    """The Commander's logic (no gRPC types), so it can be called and tested directly."""

    def __init__(self, db, commands: CommandStore, events: Events, secrets: SecretBox):
        self._db = db
        self._commands = commands
        self._secrets = secrets
        # The pushes are asked for in the commands' transaction (the outbox): a broker outage
        # neither fails the call (the processor would re-send with new commands, leaving these
        # queued with codes it never stored) nor loses the pushes.
        self._events = events

    @classmethod
    def for_settings(cls, settings, db, commands: CommandStore, events: Events) -> Commander:
        return cls(db, commands, events, SecretBox.from_settings(settings))

    def enqueue(self, commands: list[tuple[str, str, str, bytes]],
                replaces: list[tuple[str, str]]) -> tuple[int, int]:
        """Queue (host_uuid, command_uuid, request_type, payload) after checking every one; raises
        InvalidCommand (nothing queued, no push) for the first that is not acceptable."""
        for index, (host, command_uuid, request_type, payload) in enumerate(commands):
            check_command(index, host, command_uuid, request_type, payload)
        sealed = [(host, command_uuid, request_type,
                   seal_payload(self._secrets, host, command_uuid, payload))
                  for host, command_uuid, request_type, payload in commands]
        # Push every host named, not only those with new rows: a retried call (after a lost
        # answer) must still wake its hosts.
        hosts = sorted({host for host, *_ in commands})
        with self._db.transaction() as conn:
            queued = self._commands.enqueue(conn, sealed, replaces)
            for start in range(0, len(hosts), PUSH_HOSTS_PER_MESSAGE):
                self._events.add(conn, bus.PUSH_REQUESTED,
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
            commands.append((c.host_uuid, c.command_uuid, c.request_type, bytes(c.payload)))
            if c.replaces_command_uuid:
                replaces.append((c.host_uuid, c.replaces_command_uuid))
        try:
            queued, pushed = self._commander.enqueue(commands, replaces)
        except InvalidCommand as exc:
            log.warning("Enqueue refused: nothing of the call was queued",
                        extra={"reason": str(exc), "commands": len(commands)})
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{exc}; nothing of this call was queued")
        return commander_pb2.EnqueueResponse(queued=queued, pushes_requested=pushed)
