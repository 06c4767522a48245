"""One-time codes of proxy URLs (CONTRACT.md §3): stored, and named between services, only by
their SHA-256, computed here for the processor (which issues and checks them) and the proxy (which
names the attempt in `scep.result`)."""

from __future__ import annotations

import hashlib


def code_sha256(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8")).digest()
