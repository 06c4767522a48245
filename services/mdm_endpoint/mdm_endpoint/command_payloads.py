"""Queued command payloads at rest: each command plist (a rendered InstallProfile carries the CA's
challenge and a live one-time code) is sealed with SecretBox before it is stored, and opened only
when it is handed to its host. The associated data binds a ciphertext to its row (host and
command UUID): moved to another row, it does not open.

Rows stored in clear by a version before this one (a plist, never starting with a SecretBox
version byte) are served as they are; `mdm-endpoint rotate-key` seals them (docs/operations.md).
A payload that opens with neither key (sealed under a key that is gone) can never be served: it is
closed as an error, and its result published so the processor sends what it carried again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mdmscep_common.crypto import DecryptionError, SecretBox

log = logging.getLogger(__name__)

UNREADABLE_TEXT = ("The queued command does not open with SERVER_PRIVATE_KEY (it was stored under "
                   "a key that is no longer configured); it was not sent")


def payload_context(host_uuid: str, command_uuid: str) -> bytes:
    """Associated data of a command's payload: its row (lengths first, so no two rows share it)."""
    return (f"commands.payload:{len(host_uuid)}:{host_uuid}:{len(command_uuid)}:{command_uuid}"
            .encode())


def seal_payload(secrets: SecretBox, host_uuid: str, command_uuid: str, payload: bytes) -> bytes:
    return secrets.seal(payload, payload_context(host_uuid, command_uuid))


def open_payload(secrets: SecretBox, host_uuid: str, command_uuid: str, stored: bytes) -> bytes:
    """The command plist; raises DecryptionError when a sealed payload opens with neither key."""
    if not SecretBox.is_sealed(stored):
        return stored  # stored in clear before payloads were sealed
    return secrets.open(stored, payload_context(host_uuid, command_uuid))


@dataclass(frozen=True)
class UnreadableCommand:
    command_uuid: str
    request_type: str

    def result_event(self, host_uuid: str) -> dict:
        """The `command.result` the host would have sent for a command it could not run."""
        return {"host_uuid": host_uuid, "command_uuid": self.command_uuid,
                "request_type": self.request_type, "status": "Error",
                "error_chain": [{"USEnglishDescription": UNREADABLE_TEXT,
                                 "LocalizedDescription": UNREADABLE_TEXT}]}


def open_next(secrets: SecretBox, commands, conn, host_uuid: str, command,
              include_not_now: bool) -> tuple[bytes | None, list[UnreadableCommand]]:
    """The plist of `command` (the host's next, as CommandStore took it), or of the first one
    after it that opens; the commands closed on the way because they do not open."""
    unreadable: list[UnreadableCommand] = []
    while command is not None:
        try:
            return open_payload(secrets, host_uuid, command.command_uuid,
                                command.payload), unreadable
        except DecryptionError:
            log.error("a queued command does not open with SERVER_PRIVATE_KEY; closed as an "
                      "error and reported, so it is sent again",
                      extra={"host_uuid": host_uuid, "command_uuid": command.command_uuid})
            commands.close_unreadable(conn, host_uuid, command.command_uuid)
            unreadable.append(UnreadableCommand(command.command_uuid, command.request_type))
            command = commands.next_command(conn, host_uuid, include_not_now)
    return None, unreadable
