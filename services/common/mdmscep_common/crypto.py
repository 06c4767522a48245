"""AES-256-GCM encryption of secrets at rest (SCEP challenges), keyed from SERVER_PRIVATE_KEY.

Stored form: version byte 0x01 || 12-byte random nonce || ciphertext+tag. The associated data
binds a ciphertext to the row it belongs to, so a ciphertext copied to another row does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """The ciphertext was made with another key or for another row, or was altered."""


def key_from_server_private_key(server_private_key: str) -> bytes:
    """CONTRACT.md §1: the first 32 bytes of the variable's UTF-8 encoding are the AES-256 key."""
    raw = server_private_key.encode("utf-8")
    if len(raw) < 32:
        raise ValueError("SERVER_PRIVATE_KEY must be at least 32 bytes")
    return raw[:32]


class SecretBox:
    def __init__(self, server_private_key: str):
        self._aead = AESGCM(key_from_server_private_key(server_private_key))

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), context)

    def decrypt(self, stored: bytes, context: bytes) -> str:
        stored = bytes(stored)
        if not stored.startswith(FORMAT_V1) or len(stored) < 1 + NONCE_BYTES + 16:
            raise DecryptionError("unknown secret format")
        nonce, body = stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, context).decode("utf-8")
        except InvalidTag:
            raise DecryptionError("secret does not open with this key") from None
