"""AES-256-GCM encryption of secrets at rest (SCEP challenges), keyed from SERVER_PRIVATE_KEY.

Stored form: version byte 0x01 || 12-byte random nonce || ciphertext+tag. The associated data
binds a ciphertext to the row it belongs to, so a ciphertext copied to another row does not open.

Key rotation (docs/operations.md): while SERVER_PRIVATE_KEY_PREVIOUS is set, a secret that does not
open with the current key is tried with the previous one; encryption always uses the current key.
`admin-config rotate-key` re-encrypts what is stored, after which the previous key can go.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .metrics import SECRETS_OPENED_WITH_PREVIOUS_KEY

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


def _open(aead: AESGCM, stored: bytes, context: bytes) -> str | None:
    nonce, body = stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:]
    try:
        return aead.decrypt(nonce, body, context).decode("utf-8")
    except InvalidTag:
        return None


class SecretBox:
    def __init__(self, server_private_key: str, previous_server_private_key: str | None = None):
        self._aead = AESGCM(key_from_server_private_key(server_private_key))
        self._previous = (AESGCM(key_from_server_private_key(previous_server_private_key))
                          if previous_server_private_key else None)

    @classmethod
    def from_settings(cls, settings) -> SecretBox:
        """The box of a service: the current key, and the previous one during a rotation."""
        return cls(settings.server_private_key, settings.server_private_key_previous)

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), context)

    @staticmethod
    def _check(stored: bytes) -> bytes:
        stored = bytes(stored)
        if not stored.startswith(FORMAT_V1) or len(stored) < 1 + NONCE_BYTES + 16:
            raise DecryptionError("unknown secret format")
        return stored

    def opens_with_current_key(self, stored: bytes, context: bytes) -> bool:
        return _open(self._aead, self._check(stored), context) is not None

    def decrypt(self, stored: bytes, context: bytes) -> str:
        stored = self._check(stored)
        plaintext = _open(self._aead, stored, context)
        if plaintext is None and self._previous is not None:
            plaintext = _open(self._previous, stored, context)
            if plaintext is not None:
                SECRETS_OPENED_WITH_PREVIOUS_KEY.inc()
        if plaintext is None:
            raise DecryptionError("secret does not open with this key")
        return plaintext
