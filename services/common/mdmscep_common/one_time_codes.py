"""One-time codes of proxy URLs (proxy_urls.py): stored, and named between services, only by
their SHA-256, computed here for the processor (which issues and checks them) and the proxy (which
names the attempt in `scep.result`); and masked wherever a host quotes a proxy URL back."""

from __future__ import annotations

import hashlib
import re

from .proxy_urls import PROXY_PATH


def code_sha256(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8")).digest()


# A proxy URL's id, `{host},{profile},{CA},{code}`: commas as `%2C` (proxy_urls.encode_id), as
# `,` once decoded, or as `%252C` escaped twice. The code is the last part.
_PROXY_ID = re.compile(re.escape(PROXY_PATH) + r"([^\s\"'<>?#&]+)")
_PROXY_ID_BYTES = re.compile(_PROXY_ID.pattern.encode("ascii"))
_SEPARATOR = re.compile(r",|%2[cC]|%252[cC]")
_SEPARATOR_BYTES = re.compile(_SEPARATOR.pattern.encode("ascii"))


def _masked(text, separator, star):
    """`text` with what follows its last separator (the code) replaced by as many `star`."""
    ends = [m.end() for m in separator.finditer(text)]
    if not ends:
        return text
    return text[:ends[-1]] + star * (len(text) - ends[-1])


def redact_codes(text: str) -> str:
    """`text` with the one-time code of every proxy URL in it masked: a host's error can quote
    the URL it could not reach (scepclient and macOS do), and what hosts say is stored (command
    results, delivery details), logged and published."""
    return _PROXY_ID.sub(lambda m: m.group(0)[:m.start(1) - m.start(0)]
                         + _masked(m.group(1), _SEPARATOR, "*"), text)


def redact_codes_in_bytes(body: bytes) -> bytes:
    """redact_codes for a raw message (a host's plist, XML or binary): each code is replaced by
    as many `*`, so a binary plist's string lengths and offsets stay valid."""
    if PROXY_PATH.encode("ascii") not in body:
        return body
    return _PROXY_ID_BYTES.sub(lambda m: m.group(0)[:m.start(1) - m.start(0)]
                               + _masked(m.group(1), _SEPARATOR_BYTES, b"*"), body)
