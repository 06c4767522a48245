"""Apple MDM command plists (the Command dictionary and CommandUUID), built by whoever queues them.

Apple: Device Management → Commands and Queries (InstallProfile, RemoveProfile, ProfileList,
CertificateList, DeviceInformation).
"""

from __future__ import annotations

import binascii
import functools
import plistlib
import re
import struct
import uuid

INSTALL_PROFILE = "InstallProfile"
REMOVE_PROFILE = "RemoveProfile"
PROFILE_LIST = "ProfileList"
CERTIFICATE_LIST = "CertificateList"
DEVICE_INFORMATION = "DeviceInformation"


def new_command_uuid() -> str:
    return str(uuid.uuid4()).upper()


def _command(command_uuid: str, command: dict) -> bytes:
    return plistlib.dumps({"CommandUUID": command_uuid, "Command": command},
                          fmt=plistlib.FMT_XML, sort_keys=True)


def _install_profile_plistlib(command_uuid: str, profile: bytes) -> bytes:
    return _command(command_uuid, {"RequestType": INSTALL_PROFILE, "Payload": profile})


class _InstallProfileLayout:
    """_install_profile_plistlib's exact bytes without plistlib's per-line writer: the plist
    around the payload is fixed, and its <data> is the payload's base64 in lines of a fixed
    width. Taken from plistlib itself, and checked against it, once per process."""

    MARK = "00000000-0000-4000-8000-000000000000"

    def __init__(self):
        empty = _install_profile_plistlib(self.MARK, b"")
        data_open = empty.index(b"<data>\n") + len(b"<data>\n")
        self.head = empty[:data_open]
        close = empty.index(b"</data>", data_open)
        self.indent = empty[empty.rindex(b"\n", 0, close) + 1:close]
        tail = empty[close - len(self.indent):]
        self.tail_before, _, self.tail_after = tail.partition(self.MARK.encode("ascii"))
        sample = _install_profile_plistlib(self.MARK, bytes(range(256)) * 2)
        first = sample[data_open:sample.index(b"\n", data_open)]
        self.width = len(first) - len(self.indent)
        self.ok = self.width > 0 and self.width % 4 == 0 and all(
            self.build(self.MARK, payload) == _install_profile_plistlib(self.MARK, payload)
            # the last: base64 of exactly ten whole lines
            for payload in (b"", b"x", bytes(range(256)) * 7, b"<&>" * 1000,
                            b"y" * (self.width // 4 * 3 * 10)))

    def build(self, command_uuid: str, payload: bytes) -> bytes:
        encoded = binascii.b2a_base64(payload, newline=False)
        data = self.indent + (b"\n" + self.indent).join(self._lines(encoded)) + b"\n" \
            if encoded else b""
        return b"".join((self.head, data, self.tail_before, command_uuid.encode("ascii"),
                         self.tail_after))

    def _lines(self, encoded: bytes) -> list[bytes]:
        """`encoded` cut in lines of `width`: the whole lines in one struct.unpack_from (a few
        times faster than slicing them one by one, for the processor's every command)."""
        width = self.width
        whole = len(encoded) // width
        if whole > _MAX_UNPACKED_LINES:
            return [encoded[i:i + width] for i in range(0, len(encoded), width)]
        lines = list(_whole_lines(width, whole).unpack_from(encoded)) if whole else []
        if len(encoded) % width:
            lines.append(encoded[whole * width:])
        return lines

    def matches(self, payload: bytes, command_uuid: str) -> bool:
        """Whether `payload` is build(command_uuid, some bytes): the fixed text around a <data>
        of base64 lines only. Nothing between head and tail can be markup (no `<`), so a plist
        parser reads exactly {Command: {Payload: data, RequestType: InstallProfile},
        CommandUUID: command_uuid}; and the base64 is well-formed (whole quads, padding only at
        the end), so it decodes (checked without decoding: binascii is slower than the rest)."""
        tail = b"".join((self.tail_before, command_uuid.encode("ascii"), self.tail_after))
        if len(payload) < len(self.head) + len(tail) or not payload.startswith(self.head) \
                or not payload.endswith(tail):
            return False
        data = payload[len(self.head):len(payload) - len(tail)]
        # The base64 without its line layout: nothing else may be there (no markup), in whole
        # quads, padding (at most "==") only at the very end. Two passes over a few KB: this runs
        # for every command queued.
        encoded = data.translate(None, b"\n\t")
        if len(encoded) % 4 or encoded.translate(None, _BASE64_BYTES):
            return False
        padding = encoded.find(b"=")
        return padding == -1 or (padding >= len(encoded) - 2
                                 and encoded.endswith(b"=" * (len(encoded) - padding)))


# Profiles up to about 45 KB (nearly all) are cut by one cached struct per line count; a cached
# struct holds a code per line.
_MAX_UNPACKED_LINES = 1000


@functools.lru_cache(maxsize=256)
def _whole_lines(width: int, count: int) -> struct.Struct:
    return struct.Struct(f"{width}s" * count)


_BASE64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_LAYOUT = _InstallProfileLayout()
# Command UUIDs as new_command_uuid makes them need no XML escaping.
_PLAIN_UUID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def install_profile(command_uuid: str, profile: bytes) -> bytes:
    """The InstallProfile command plist, byte for byte plistlib's, about ten times faster for a
    profile of a few KB (the processor builds one per host and delivery)."""
    if _LAYOUT.ok and _PLAIN_UUID.fullmatch(command_uuid):
        return _LAYOUT.build(command_uuid, profile)
    return _install_profile_plistlib(command_uuid, profile)


def is_install_profile(payload: bytes, command_uuid: str) -> bool:
    """Whether `payload` is an InstallProfile for `command_uuid` exactly as install_profile's
    fast path builds it: checked without parsing (the Commander checks every command it queues;
    anything this does not recognise, it parses)."""
    return _LAYOUT.ok and bool(_PLAIN_UUID.fullmatch(command_uuid)) \
        and _LAYOUT.matches(payload, command_uuid)


def remove_profile(command_uuid: str, identifier: str) -> bytes:
    return _command(command_uuid, {"RequestType": REMOVE_PROFILE, "Identifier": identifier})


def profile_list(command_uuid: str) -> bytes:
    return _command(command_uuid, {"RequestType": PROFILE_LIST, "ManagedOnly": True})


def certificate_list(command_uuid: str) -> bytes:
    return _command(command_uuid, {"RequestType": CERTIFICATE_LIST, "ManagedOnly": True})


def device_information(command_uuid: str, queries: list[str]) -> bytes:
    return _command(command_uuid, {"RequestType": DEVICE_INFORMATION, "Queries": list(queries)})
