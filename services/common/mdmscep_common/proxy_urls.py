"""Proxy URLs, the one place they are written and read: the profile-processor renders
`{SCEP_PROXY_PUBLIC_URL}/mdm/scep/proxy/{id}` into each host's profile (README.md "SCEP proxy"),
scep-proxy reads the id back from the request path.

The id is `<host_uuid>,<profile_uuid>,<ca_name>,<one_time_code>`, path-escaped as a whole (the
commas as `%2C`); each part is a restricted alphabet, so an id either parses into exactly the parts
it was built from or is malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

PROXY_PATH = "/mdm/scep/proxy/"
SEPARATOR = ","

HOST_UUID = re.compile(r"[A-Za-z0-9-]{1,64}")
PROFILE_UUID = re.compile(r"[A-Za-z0-9_-]{1,128}")
CA_NAME = re.compile(r"[A-Za-z0-9_]{1,255}")
ONE_TIME_CODE = re.compile(r"[A-Za-z0-9_-]{1,256}")
# An id whose parts hold only these characters (each part's alphabet) needs only its commas
# escaped: quote() leaves letters, digits, "_" and "-" as they are.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_,-]*")


class MalformedId(ValueError):
    """The proxy URL's id is not `<host_uuid>,<profile_uuid>,<ca_name>,<one_time_code>`."""


@dataclass(frozen=True)
class ProxyId:
    """The identity a proxy URL carries. The code is a secret: not in repr."""

    host_uuid: str
    profile_uuid: str
    ca_name: str
    one_time_code: str = field(repr=False)


def encode_id(proxy_id: ProxyId) -> str:
    """The id as it stands in the URL's path: the four parts joined by commas, path-escaped."""
    raw = SEPARATOR.join((proxy_id.host_uuid, proxy_id.profile_uuid, proxy_id.ca_name,
                          proxy_id.one_time_code))
    if _PLAIN_ID.fullmatch(raw):  # every rendered profile: quote() goes byte by byte here
        return raw.replace(SEPARATOR, "%2C")
    return quote(raw, safe="")


def proxy_url(public_url: str, proxy_id: ProxyId) -> str:
    """`{SCEP_PROXY_PUBLIC_URL}/mdm/scep/proxy/{id}`."""
    return f"{public_url.rstrip('/')}{PROXY_PATH}{encode_id(proxy_id)}"


def decode_id(raw: str) -> ProxyId:
    """The path-decoded id (as the web framework hands it over). Reasons never quote the input:
    it carries the one-time code."""
    parts = raw.split(SEPARATOR)
    if len(parts) != 4 or not all(parts):
        raise MalformedId("the proxy URL must end in host,profile,CA,code")
    host_uuid, profile_uuid, ca_name, code = parts
    for value, pattern, what in ((host_uuid, HOST_UUID, "host UUID"),
                                 (profile_uuid, PROFILE_UUID, "profile UUID"),
                                 (ca_name, CA_NAME, "CA name"),
                                 (code, ONE_TIME_CODE, "one-time code")):
        if not pattern.fullmatch(value):
            raise MalformedId(f"the {what} in the proxy URL is malformed")
    return ProxyId(host_uuid, profile_uuid, ca_name, code)


def decode_url(url: str) -> ProxyId:
    """The id of a whole proxy URL (query and fragment ignored)."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    start = path.find(PROXY_PATH)
    if start < 0:
        raise MalformedId("not a proxy URL")
    return decode_id(unquote(path[start + len(PROXY_PATH):]))


def ca_name_hint(raw: str) -> str | None:
    """The CA name of a path-decoded id if that part is well-formed, to name the CA in a
    refusal."""
    parts = raw.split(SEPARATOR)
    if len(parts) == 4 and CA_NAME.fullmatch(parts[2]):
        return parts[2]
    return None
