"""Validation of an uploaded configuration profile (README.md "Admin API"). Each problem is a 400
whose message names it. Pure functions: the caller supplies which CA names exist."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mdmscep_common import fleet_vars
from mdmscep_common.profile_payloads import (
    SCEP_PAYLOAD_TYPE,
    ProfileUnreadable,
    StringValue,
    load_profile,
    strings,
)

from .errors import BadRequest

# A CDATA section: its text is not XML-decoded, so an escaped value would reach the device altered.
_CDATA = re.compile(rb"<!\[CDATA\[.*?\]\]>", re.DOTALL)


def _bad(message: str) -> BadRequest:
    return BadRequest(message, [{"name": "profile", "reason": message}])


@dataclass
class ValidatedProfile:
    raw: bytes
    name: str
    identifier: str
    payload_uuid: str
    ca_names: set[str] = field(default_factory=set)
    has_scep_payload: bool = False


def _require_string(profile: dict, key: str) -> str:
    value = profile.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"The profile's {key} is missing or empty")
    return value


def _is_subject_cn_or_ou(s: StringValue) -> bool:
    # Subject is [[["CN", "value"]], [["OU", "value"]]]: path PayloadContent, Subject, i, j, 1.
    path = s.path
    if s.payload_type != SCEP_PAYLOAD_TYPE or len(path) != 5 or path[:2] != ("PayloadContent", "Subject"):
        return False
    return path[4] == 1


def _subject_attribute(profile: dict, s: StringValue) -> str:
    payload = profile["PayloadContent"][s.payload_index]
    _, _, i, j, _ = s.path
    return payload["PayloadContent"]["Subject"][i][j][0]


def validate_profile(raw: bytes, ca_exists: Callable[[str], bool]) -> ValidatedProfile:
    if not raw or not raw.strip():
        raise _bad("The profile is empty")
    try:
        profile = load_profile(raw)
    except ProfileUnreadable as exc:
        raise _bad(f"Malformed profile: {exc}") from None
    if profile.get("PayloadType") != "Configuration":
        raise _bad("The profile's PayloadType must be Configuration")
    identifier = _require_string(profile, "PayloadIdentifier")
    payload_uuid = _require_string(profile, "PayloadUUID")
    name = profile.get("PayloadDisplayName") if isinstance(profile.get("PayloadDisplayName"), str) \
        else identifier
    content = profile.get("PayloadContent", [])
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise _bad("The profile's PayloadContent must be an array of payload dictionaries")

    result = ValidatedProfile(raw, name, identifier, payload_uuid,
                              has_scep_payload=any(p.get("PayloadType") == SCEP_PAYLOAD_TYPE
                                                   for p in content))
    scep_payloads_with_vars: set[int] = set()
    custom_ca_names: set[str] = set()  # every CA any custom SCEP variable names
    values = strings(profile)
    for s in values:
        for occurrence in fleet_vars.find_variables(s.value):
            variable = occurrence.name
            if not fleet_vars.is_known(variable):
                raise _bad(f"Unknown Fleet variable ${variable}")
            if s.path and s.path[-1] == "<key>":
                raise _bad(f"${variable} cannot be used in a dictionary key")
            if variable in fleet_vars.HOST_VARIABLES:
                continue  # the host's own value, anywhere a string is
            if variable in fleet_vars.RENEWAL_IDS:
                # Fleet's older name may be in the CN or OU, its newer one only in the OU.
                allowed = ("CN", "OU") if variable == fleet_vars.SCEP_RENEWAL_ID else ("OU",)
                if not _is_subject_cn_or_ou(s) or _subject_attribute(profile, s) not in allowed:
                    raise _bad(f"${variable} can only be used in the Subject "
                               f"{' or '.join(allowed)} of a {SCEP_PAYLOAD_TYPE} payload")
                continue
            if s.payload_type != SCEP_PAYLOAD_TYPE or s.payload_index is None:
                raise _bad(f"${variable} can only be used in a {SCEP_PAYLOAD_TYPE} payload")
            scep_payloads_with_vars.add(s.payload_index)
            custom_ca_names.add(fleet_vars.ca_name_of(variable))
    if len(scep_payloads_with_vars) > 1:
        raise _bad(f"Only one {SCEP_PAYLOAD_TYPE} payload per profile may use custom SCEP variables")
    for index in scep_payloads_with_vars:
        result.ca_names.add(_check_scep_payload(content[index]))
    # Only the payload's own CA is rendered: a variable naming any other would reach the device
    # as written.
    for other in sorted(custom_ca_names - result.ca_names):
        raise _bad(f"Custom SCEP variables in a profile must all name its SCEP payload's "
                   f"certificate authority ({', '.join(sorted(result.ca_names))}), not {other}")
    for ca_name in result.ca_names:
        if not ca_exists(ca_name):
            raise _bad(f"Certificate authority {ca_name} does not exist; add it before uploading "
                       "a profile that uses it")
    _check_textual(raw, values)
    return result


def _exact_variable(value, prefix: str) -> str | None:
    if not isinstance(value, str):
        return None
    found = fleet_vars.find_variables(value)
    if len(found) != 1 or found[0].start != 0 or found[0].end != len(value):
        return None
    name = found[0].name
    return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else None


def _check_scep_payload(payload: dict) -> str:
    content = payload.get("PayloadContent")
    if not isinstance(content, dict):
        raise _bad(f"The {SCEP_PAYLOAD_TYPE} payload has no PayloadContent dictionary")
    challenge_ca = _exact_variable(content.get("Challenge"), fleet_vars.CUSTOM_SCEP_CHALLENGE)
    url_ca = _exact_variable(content.get("URL"), fleet_vars.CUSTOM_SCEP_PROXY_URL)
    if challenge_ca is None:
        raise _bad(f"The SCEP payload's Challenge must be exactly "
                   f"${fleet_vars.CUSTOM_SCEP_CHALLENGE}<CA_NAME>")
    if url_ca is None:
        raise _bad(f"The SCEP payload's URL must be exactly ${fleet_vars.CUSTOM_SCEP_PROXY_URL}<CA_NAME>")
    if challenge_ca != url_ca:
        raise _bad(f"The SCEP payload's Challenge and URL name different certificate authorities "
                   f"({challenge_ca} and {url_ca})")
    return challenge_ca


def _check_textual(raw: bytes, values: list[StringValue]) -> None:
    """Substitution is textual: every variable must appear literally in the uploaded bytes."""
    parsed = sorted(o.name for s in values for o in fleet_vars.find_variables(s.value))
    textual = sorted(fleet_vars.ProfileTemplate(raw).occurrences)
    if parsed != textual:
        raise _bad("Fleet variables must be written literally ($NAME or ${NAME}), not as XML "
                   "character references or inside comments")
    if any(fleet_vars.VARIABLE_BYTES.search(section.group(0)) for section in _CDATA.finditer(raw)):
        raise _bad("Fleet variables cannot be written inside a CDATA section (their XML-escaped "
                   "values would reach the device undecoded)")
