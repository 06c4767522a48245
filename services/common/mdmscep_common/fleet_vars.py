"""Fleet variables in Apple profiles (README.md "Admin API"): finding them, and rendering a per-host copy
by textual, XML-escaped substitution on the uploaded bytes (everything else byte for byte)."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "FLEET_VAR_"
CUSTOM_SCEP_CHALLENGE = "FLEET_VAR_CUSTOM_SCEP_CHALLENGE_"
CUSTOM_SCEP_PROXY_URL = "FLEET_VAR_CUSTOM_SCEP_PROXY_URL_"
SCEP_RENEWAL_ID = "FLEET_VAR_SCEP_RENEWAL_ID"
# Fleet's newer name of the renewal id: only in a SCEP payload's Subject OU.
CERTIFICATE_RENEWAL_ID = "FLEET_VAR_CERTIFICATE_RENEWAL_ID"
RENEWAL_IDS = (SCEP_RENEWAL_ID, CERTIFICATE_RENEWAL_ID)
# The host's own values (anywhere in a profile): its serial number and platform (from the facts
# mdm-endpoint keeps; a change re-sends the profile) and its UDID.
HOST_HARDWARE_SERIAL = "FLEET_VAR_HOST_HARDWARE_SERIAL"
HOST_UUID = "FLEET_VAR_HOST_UUID"
HOST_PLATFORM = "FLEET_VAR_HOST_PLATFORM"
HOST_VARIABLES = (HOST_HARDWARE_SERIAL, HOST_UUID, HOST_PLATFORM)
# The host facts (of mdm_endpoint/host_facts.py) whose change re-sends a profile using them.
HOST_FACT_VARIABLES = {HOST_HARDWARE_SERIAL: "serial_number", HOST_PLATFORM: "platform"}
# Fleet's names of the platforms (a Mac's facts say darwin, Fleet's variable says macos).
PLATFORM_NAMES = {"darwin": "macos", "ios": "ios", "ipados": "ipados"}

# `$NAME` or `${NAME}`; a bare name runs over every letter, digit and underscore.
VARIABLE = re.compile(r"\$(?:\{(FLEET_VAR_[A-Za-z0-9_]*)\}|(FLEET_VAR_[A-Za-z0-9_]*))")
VARIABLE_BYTES = re.compile(VARIABLE.pattern.encode())


@dataclass(frozen=True)
class Occurrence:
    name: str
    start: int
    end: int


def find_variables(text: str) -> list[Occurrence]:
    return [Occurrence(m.group(1) or m.group(2), m.start(), m.end()) for m in VARIABLE.finditer(text)]


def ca_name_of(variable: str) -> str | None:
    """The CA a custom SCEP variable names, or None for other variables."""
    for prefix in (CUSTOM_SCEP_CHALLENGE, CUSTOM_SCEP_PROXY_URL):
        if variable.startswith(prefix):
            return variable[len(prefix):]
    return None


def is_known(variable: str) -> bool:
    return variable in RENEWAL_IDS or variable in HOST_VARIABLES or bool(ca_name_of(variable))


def uses_host_facts(raw: bytes) -> bool:
    """Whether a profile's copy depends on a host fact that can change (HOST_FACT_VARIABLES)."""
    return any((m.group(1) or m.group(2)).decode("ascii") in HOST_FACT_VARIABLES
               for m in VARIABLE_BYTES.finditer(raw))


def xml_escape(value: str) -> str:
    """XML-escaped, and ASCII only (characters above U+007F as `&#N;`), so the value reads the
    same whatever encoding the profile declares. CR as `&#13;`: a parser turns a literal one
    into LF."""
    escaped = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace('"', "&quot;").replace("'", "&apos;").replace("\r", "&#13;"))
    return escaped.encode("ascii", "xmlcharrefreplace").decode("ascii")


def renewal_id(profile_uuid: str) -> str:
    return f"fleet-{profile_uuid}"


class ProfileTemplate:
    """An uploaded profile split once at its variables, so rendering for each host is a join."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self._parts: list[bytes | str] = []
        last = 0
        self._spelling: dict[int, bytes] = {}
        for match in VARIABLE_BYTES.finditer(raw):
            self._parts.append(raw[last:match.start()])
            self._spelling[len(self._parts)] = match.group(0)  # `$NAME` or `${NAME}` as written
            self._parts.append((match.group(1) or match.group(2)).decode("ascii"))
            last = match.end()
        self._parts.append(raw[last:])

    @property
    def occurrences(self) -> list[str]:
        """Variable names in the order they appear in the bytes."""
        return [p for p in self._parts if isinstance(p, str)]

    def render(self, values: dict[str, str]) -> bytes:
        """Substitute every variable with its XML-escaped value; unknown ones stay as they were."""
        out = []
        for index, part in enumerate(self._parts):
            if isinstance(part, bytes):
                out.append(part)
            elif part in values:
                out.append(xml_escape(values[part]).encode("ascii"))
            else:
                out.append(self._spelling[index])
        return b"".join(out)
