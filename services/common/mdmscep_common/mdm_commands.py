"""Apple MDM command plists (the Command dictionary and CommandUUID), built by whoever queues them.

Apple: Device Management → Commands and Queries (InstallProfile, RemoveProfile, ProfileList,
CertificateList).
"""

from __future__ import annotations

import plistlib
import uuid

INSTALL_PROFILE = "InstallProfile"
REMOVE_PROFILE = "RemoveProfile"
PROFILE_LIST = "ProfileList"
CERTIFICATE_LIST = "CertificateList"


def new_command_uuid() -> str:
    return str(uuid.uuid4()).upper()


def _command(command_uuid: str, command: dict) -> bytes:
    return plistlib.dumps({"CommandUUID": command_uuid, "Command": command},
                          fmt=plistlib.FMT_XML, sort_keys=True)


def install_profile(command_uuid: str, profile: bytes) -> bytes:
    return _command(command_uuid, {"RequestType": INSTALL_PROFILE, "Payload": profile})


def remove_profile(command_uuid: str, identifier: str) -> bytes:
    return _command(command_uuid, {"RequestType": REMOVE_PROFILE, "Identifier": identifier})


def profile_list(command_uuid: str) -> bytes:
    return _command(command_uuid, {"RequestType": PROFILE_LIST, "ManagedOnly": True})


def certificate_list(command_uuid: str) -> bytes:
    return _command(command_uuid, {"RequestType": CERTIFICATE_LIST, "ManagedOnly": True})
