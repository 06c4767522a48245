"""Secrets as versions before format 0x02 stored them (mdmscep_common.crypto): AES-256-GCM keyed
with the first 32 UTF-8 bytes of SERVER_PRIVATE_KEY, version byte 0x01."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def seal_v1(server_private_key: str, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(12)
    key = server_private_key.encode("utf-8")[:32]
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, context)
