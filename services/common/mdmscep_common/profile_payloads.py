"""Reading an Apple configuration profile's payloads (plist only; no database or HTTP)."""

from __future__ import annotations

import plistlib
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

SCEP_PAYLOAD_TYPE = "com.apple.security.scep"


class ProfileUnreadable(ValueError):
    pass


def load_profile(raw: bytes) -> dict[str, Any]:
    if raw.startswith(b"bplist"):
        raise ProfileUnreadable("binary property lists are not supported; upload the XML form")
    try:
        profile = plistlib.loads(raw, fmt=plistlib.FMT_XML)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, LookupError,
            OverflowError, AttributeError, RecursionError) as exc:
        raise ProfileUnreadable(f"the profile is not a valid XML property list ({exc})") from None
    if not isinstance(profile, dict):
        raise ProfileUnreadable("the profile's top level is not a dictionary")
    return profile


@dataclass(frozen=True)
class StringValue:
    """A string somewhere in the profile, and where: the payload it belongs to and its key path."""
    value: str
    payload_index: int | None  # index in PayloadContent, None for the top level
    payload_type: str
    path: tuple[Any, ...]


def strings(profile: dict[str, Any]) -> list[StringValue]:
    found: list[StringValue] = []

    def walk(node: Any, payload_index: int | None, payload_type: str, path: tuple) -> None:
        if isinstance(node, str):
            found.append(StringValue(node, payload_index, payload_type, path))
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str):
                    found.append(StringValue(key, payload_index, payload_type, (*path, "<key>")))
                walk(value, payload_index, payload_type, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, payload_index, payload_type, (*path, i))

    for key, value in profile.items():
        if key == "PayloadContent" and isinstance(value, list):
            for index, payload in enumerate(value):
                kind = payload.get("PayloadType", "") if isinstance(payload, dict) else ""
                walk(payload, index, str(kind), ())
        else:
            walk(value, None, "Configuration", (key,))
    return found
