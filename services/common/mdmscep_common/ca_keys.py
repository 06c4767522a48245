"""Names every service must agree on for a CA: the associated data of its encrypted challenge,
and the PostgreSQL advisory-lock class of its request slots."""

from __future__ import annotations

import zlib


def challenge_context(ca_name: str) -> bytes:
    """AES-GCM associated data of a CA's challenge: the ciphertext opens only for that CA."""
    return b"certificate_authorities.challenge:" + ca_name.encode("utf-8")


def slot_lock_class(ca_name: str) -> int:
    """A stable signed 32-bit advisory-lock class for a CA's request slots (scep-proxy holds
    them; admin-config counts them for statistics)."""
    value = zlib.crc32(ca_name.encode("utf-8"))
    return value - 2**32 if value >= 2**31 else value
