"""AES-256-GCM encryption of secrets at rest (CA challenges, queued MDM commands), keyed from
SERVER_PRIVATE_KEY; and what a usable SERVER_PRIVATE_KEY is.

Stored form: version byte || 12-byte random nonce || ciphertext+tag. The associated data binds a
ciphertext to the row it belongs to, so a ciphertext copied to another row does not open.
- 0x02 (written now): the AES key is HKDF-SHA256 over the whole of SERVER_PRIVATE_KEY, so every
  character of it counts.
- 0x01 (legacy, read only): the AES key was the first 32 UTF-8 bytes of SERVER_PRIVATE_KEY, so two
  keys sharing those bytes opened each other's secrets. Such secrets still open, but not "with the
  current key": `admin-config rotate-key` and `mdm-endpoint rotate-key` re-encrypt them as 0x02.

Key rotation (docs/operations.md): while SERVER_PRIVATE_KEY_PREVIOUS is set, a secret that does not
open with the current key is tried with the previous one; encryption always uses the current key.
"""

from __future__ import annotations

import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .metrics import SECRETS_OPENED_WITH_PREVIOUS_KEY

FORMAT_V1 = b"\x01"  # legacy: first 32 bytes of the key
FORMAT_V2 = b"\x02"  # HKDF-SHA256 over the whole key
FORMATS = (FORMAT_V1, FORMAT_V2)
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_KEY_CHARS = 32

# Fixed HKDF inputs: a key derived here is for this use only (changing them changes every key).
HKDF_SALT = b"mdmscep SERVER_PRIVATE_KEY"
HKDF_INFO = b"mdmscep secrets at rest: AES-256-GCM, format 2"

# Example values shipped in this repository (README, docs/, deploy/): a copied example must never
# key a real deployment. Compared case-insensitively.
EXAMPLE_KEYS = frozenset(k.lower() for k in (
    "EXAMPLE-ONLY-replace-with-openssl-rand-hex-32",   # deploy/k8s/base/secrets.yaml
    "lint-placeholder-not-a-real-key-0123456789",      # deploy/lint.sh (compose rendering only)
))
# Words that mark a value as a placeholder someone forgot to replace.
PLACEHOLDER_WORDS = re.compile(
    r"change[-_ .]?(?:me|it)|replace[-_ .]?(?:me|with|this)|example|placeholder|"
    r"not[-_ .]?a[-_ .]?real|your[-_ .]?(?:secret|key)|dummy|insecure", re.IGNORECASE)
# A random key of 32+ characters uses far more distinct characters than this.
MIN_DISTINCT_CHARS = 6


class DecryptionError(Exception):
    """The ciphertext was made with another key or for another row, or was altered."""


class UnusableKey(ValueError):
    """The value cannot key the encryption of secrets (too short, or a known placeholder)."""


def check_server_private_key(value: str) -> None:
    """Raise UnusableKey (saying why) unless `value` may be SERVER_PRIVATE_KEY: at least 32
    characters, not an example this repository ships, no placeholder word, not a repetition of a
    shorter pattern (`aaaa…`, `abcabc…`), and at least MIN_DISTINCT_CHARS different characters."""
    if len(value) < MIN_KEY_CHARS:
        raise UnusableKey(f"must be at least {MIN_KEY_CHARS} characters, got {len(value)}")
    if value.strip().lower() in EXAMPLE_KEYS:
        raise UnusableKey("is an example value from this repository's documentation; "
                          "generate one, e.g. `openssl rand -hex 32`")
    word = PLACEHOLDER_WORDS.search(value)
    if word:
        raise UnusableKey(f"looks like a placeholder (contains {word.group(0)!r}); "
                          "generate one, e.g. `openssl rand -hex 32`")
    if _repeats_a_shorter_pattern(value):
        raise UnusableKey("is a short pattern repeated (such as one character over and over); "
                          "generate one, e.g. `openssl rand -hex 32`")
    if len(set(value)) < MIN_DISTINCT_CHARS:
        raise UnusableKey(f"uses fewer than {MIN_DISTINCT_CHARS} different characters; "
                          "generate one, e.g. `openssl rand -hex 32`")


def _repeats_a_shorter_pattern(value: str) -> bool:
    """True for `xxxx…`, `abab…`, `passwordpassword…`: the value is its own shift by p (periods
    up to 256 characters, which bounds the work for a very long value)."""
    return any(value[p:] == value[:-p] for p in range(1, min(len(value) // 2, 256) + 1))


def key_from_server_private_key(server_private_key: str) -> bytes:
    """The AES-256 key of format 0x02: HKDF-SHA256 over the whole UTF-8 value."""
    raw = server_private_key.encode("utf-8")
    if len(server_private_key) < MIN_KEY_CHARS:
        raise ValueError(f"SERVER_PRIVATE_KEY must be at least {MIN_KEY_CHARS} characters")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(raw)


def legacy_key_from_server_private_key(server_private_key: str) -> bytes:
    """The AES-256 key of format 0x01: the first 32 UTF-8 bytes (read only)."""
    raw = server_private_key.encode("utf-8")
    if len(raw) < 32:
        raise ValueError("SERVER_PRIVATE_KEY must be at least 32 bytes")
    return raw[:32]


class _Keys:
    """One SERVER_PRIVATE_KEY's AES-GCM instances, per stored format."""

    def __init__(self, server_private_key: str):
        self.by_format = {FORMAT_V2: AESGCM(key_from_server_private_key(server_private_key)),
                          FORMAT_V1: AESGCM(legacy_key_from_server_private_key(server_private_key))}

    def open(self, stored: bytes, context: bytes) -> bytes | None:
        nonce, body = stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:]
        try:
            return self.by_format[stored[:1]].decrypt(nonce, body, context)
        except InvalidTag:
            return None


class SecretBox:
    def __init__(self, server_private_key: str, previous_server_private_key: str | None = None):
        self._current = _Keys(server_private_key)
        self._previous = _Keys(previous_server_private_key) if previous_server_private_key else None

    @classmethod
    def from_settings(cls, settings) -> SecretBox:
        """The box of a service: the current key, and the previous one during a rotation."""
        if not settings.server_private_key:
            raise ValueError("this service was configured without SERVER_PRIVATE_KEY")
        return cls(settings.server_private_key, settings.server_private_key_previous)

    @staticmethod
    def is_sealed(stored: bytes) -> bool:
        """Whether `stored` is in one of this module's formats (by its version byte)."""
        return bytes(stored[:1]) in FORMATS

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V2 + nonce + self._current.by_format[FORMAT_V2].encrypt(nonce, plaintext,
                                                                              context)

    def encrypt(self, plaintext: str, context: bytes) -> bytes:
        return self.seal(plaintext.encode("utf-8"), context)

    @staticmethod
    def _check(stored: bytes) -> bytes:
        stored = bytes(stored)
        if stored[:1] not in FORMATS or len(stored) < 1 + NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("unknown secret format")
        return stored

    def opens_with_current_key(self, stored: bytes, context: bytes) -> bool:
        """True only for the current format under the current key: anything else (the previous
        key, or the legacy format under either key) is for rotate-key to re-encrypt."""
        stored = self._check(stored)
        return stored[:1] == FORMAT_V2 and self._current.open(stored, context) is not None

    def open(self, stored: bytes, context: bytes) -> bytes:
        stored = self._check(stored)
        plaintext = self._current.open(stored, context)
        if plaintext is None and self._previous is not None:
            plaintext = self._previous.open(stored, context)
            if plaintext is not None:
                SECRETS_OPENED_WITH_PREVIOUS_KEY.inc()
        elif plaintext is not None and stored[:1] == FORMAT_V1:
            # Not yet re-encrypted: the same signal (and the same remedy, rotate-key) as a
            # secret under the previous key.
            SECRETS_OPENED_WITH_PREVIOUS_KEY.inc()
        if plaintext is None:
            raise DecryptionError("secret does not open with this key")
        return plaintext

    def decrypt(self, stored: bytes, context: bytes) -> str:
        return self.open(stored, context).decode("utf-8")
