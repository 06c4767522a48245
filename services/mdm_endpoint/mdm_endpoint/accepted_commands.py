"""What the Commander accepts to queue for a host: the commands the product sends, each a plist
that says what it was declared to be (mdmscep_common.mdm_commands builds them).

Checked for every command of a call before any is queued: a caller of Commander.Enqueue cannot
slip another MDM command (EraseDevice, say) under an allowed request_type, or under another
command's UUID. InstallProfiles as the processor builds them are recognised without parsing
(mdm_commands.is_install_profile); anything else is parsed with plistlib, XML only.
"""

from __future__ import annotations

import plistlib
from typing import Any

from mdmscep_common.mdm_commands import (
    CERTIFICATE_LIST,
    INSTALL_PROFILE,
    PROFILE_LIST,
    REMOVE_PROFILE,
    is_install_profile,
)

# The processor sends these and nothing else (profile_processor.delivery).
REQUEST_TYPES = frozenset({INSTALL_PROFILE, REMOVE_PROFILE, PROFILE_LIST, CERTIFICATE_LIST})
MAX_PAYLOAD_BYTES = 4 << 20
# As long as a result's CommandUUID may be (mdm_endpoint.protocol), and a UDID with room to spare.
MAX_COMMAND_UUID_CHARS = 128
MAX_HOST_UUID_CHARS = 255


class InvalidCommand(ValueError):
    """The command is not one the Commander queues; the message says why."""


def check_command(index: int, host_uuid: str, command_uuid: str, request_type: str,
                  payload: bytes) -> None:
    """Raise InvalidCommand naming the command (its position in the call) and the problem."""
    where = f"command {index}"
    if not host_uuid or len(host_uuid) > MAX_HOST_UUID_CHARS:
        raise InvalidCommand(f"{where}: host_uuid is empty or longer than {MAX_HOST_UUID_CHARS}")
    if not command_uuid or len(command_uuid) > MAX_COMMAND_UUID_CHARS:
        raise InvalidCommand(f"{where}: command_uuid is empty or longer than "
                             f"{MAX_COMMAND_UUID_CHARS}")
    where = f"command {index} ({command_uuid})"
    if request_type not in REQUEST_TYPES:
        raise InvalidCommand(f"{where}: request_type {request_type[:40]!r} is not one of "
                             f"{', '.join(sorted(REQUEST_TYPES))}")
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(f"{where}: payload is empty or larger than {MAX_PAYLOAD_BYTES} bytes")
    if request_type == INSTALL_PROFILE and is_install_profile(payload, command_uuid):
        return
    plist = _parse(where, payload)
    if plist.get("CommandUUID") != command_uuid:
        raise InvalidCommand(f"{where}: the payload's CommandUUID is not the declared "
                             "command_uuid")
    command = plist.get("Command")
    if not isinstance(command, dict):
        raise InvalidCommand(f"{where}: the payload has no Command dictionary")
    actual = command.get("RequestType")
    if actual != request_type:
        shown = repr(actual[:40]) if isinstance(actual, str) else "missing"
        raise InvalidCommand(f"{where}: the payload's Command.RequestType ({shown}) is not the "
                             f"declared request_type {request_type!r}")
    if request_type == INSTALL_PROFILE and not isinstance(command.get("Payload"), bytes):
        raise InvalidCommand(f"{where}: InstallProfile's Command.Payload must be data")
    if request_type == REMOVE_PROFILE and not isinstance(command.get("Identifier"), str):
        raise InvalidCommand(f"{where}: RemoveProfile's Command.Identifier must be a string")


class _UniqueKeys(dict):
    """A plist dictionary that refuses a key given twice: plistlib keeps the last value, another
    parser (the device's) might keep the first, so such a plist may not mean one thing."""

    def __setitem__(self, key, value):
        if key in self:
            raise _DuplicateKey(key)
        super().__setitem__(key, value)


class _DuplicateKey(Exception):
    pass


def _parse(where: str, payload: bytes) -> dict[str, Any]:
    try:
        plist = plistlib.loads(payload, fmt=plistlib.FMT_XML, dict_type=_UniqueKeys)
    except _DuplicateKey as exc:
        raise InvalidCommand(f"{where}: the payload has the key {str(exc)[:40]!r} twice in one "
                             "dictionary") from None
    except Exception as exc:  # noqa: BLE001 - the caller's bytes: any parse failure is theirs
        raise InvalidCommand(f"{where}: the payload is not an XML property list "
                             f"({exc.__class__.__name__})") from None
    if not isinstance(plist, dict):
        raise InvalidCommand(f"{where}: the payload is not a dictionary")
    return plist
