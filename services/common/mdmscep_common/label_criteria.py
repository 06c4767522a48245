"""Dynamic labels: the rule a label's `criteria` states over host facts (the facts mdm-endpoint
keeps from DeviceInformation, mdm_endpoint/host_facts.py), checked when admin-config accepts a
label (`parse`) and evaluated by the profile-processor for each host (`matches`).

Every key given must hold (AND); at least one key. Text compares exactly, except the serial
prefix; OS versions compare number by number ("14.10" is above "14.9"), a version that is not
dotted numbers matches no range.

  serial_number_prefix   text the serial number starts with
  model                  DeviceInformation Model, e.g. "MacBook Pro"
  product_name           DeviceInformation ProductName, e.g. "MacBookPro18,3", "iPhone15,2"
  platform               darwin | ios | ipados (from the product name, as Fleet names them)
  os_version_at_least    lowest OS version in the label (inclusive), e.g. "14.0"
  os_version_below       OS versions from this one on are not in the label, e.g. "15"
"""

from __future__ import annotations

import re
from typing import Any

TEXT_KEYS = ("serial_number_prefix", "model", "product_name")
PLATFORMS = ("darwin", "ios", "ipados")
VERSION_KEYS = ("os_version_at_least", "os_version_below")
KEYS = (*TEXT_KEYS, "platform", *VERSION_KEYS)
MAX_TEXT = 255
_VERSION = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")


class InvalidCriteria(ValueError):
    """Criteria that cannot be a label's rule; the message names the key and the problem."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def parse(criteria: Any) -> dict[str, str]:
    """The criteria as stored and carried in events, or InvalidCriteria."""
    if not isinstance(criteria, dict) or not criteria:
        raise InvalidCriteria("criteria", f"must be an object with at least one of {', '.join(KEYS)}")
    out: dict[str, str] = {}
    for key, value in criteria.items():
        if key not in KEYS:
            raise InvalidCriteria(str(key)[:64], f"unknown criterion (known: {', '.join(KEYS)})")
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isprintable():
            raise InvalidCriteria(key, f"must be non-empty printable text of at most {MAX_TEXT} characters")
        if key == "platform" and value not in PLATFORMS:
            raise InvalidCriteria(key, f"must be one of {', '.join(PLATFORMS)}")
        if key in VERSION_KEYS and not _VERSION.match(value):
            raise InvalidCriteria(key, "must be a dotted version such as 14 or 14.2.1")
        out[key] = value
    low, high = out.get("os_version_at_least"), out.get("os_version_below")
    if low and high and version_key(low) >= version_key(high):
        raise InvalidCriteria("os_version_below", "must be above os_version_at_least")
    return out


def version_key(version: str) -> tuple[int, ...] | None:
    """A dotted version as numbers without trailing zeros ("14.0" == "14"); None if it is not one."""
    if not _VERSION.match(version or ""):
        return None
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def matches(criteria: dict[str, str], facts: dict[str, Any]) -> bool:
    """Whether a host with these facts (serial_number, model, product_name, platform,
    os_version; missing = unknown) is in the label. An unknown fact matches nothing."""
    def fact(name: str) -> str:
        value = facts.get(name)
        return value if isinstance(value, str) else ""

    for criterion, wanted in criteria.items():
        if criterion == "serial_number_prefix":
            if not fact("serial_number") or not fact("serial_number").startswith(wanted):
                return False
        elif criterion in ("model", "product_name", "platform"):
            if fact(criterion) != wanted:
                return False
        elif criterion in VERSION_KEYS:
            have = version_key(fact("os_version"))
            if have is None:
                return False
            bound = version_key(wanted)
            if bound is None:
                return False
            if criterion == "os_version_at_least" and have < bound:
                return False
            if criterion == "os_version_below" and have >= bound:
                return False
        else:
            return False  # a key this version does not know never widens a label
    return True
