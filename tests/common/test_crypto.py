import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mdmscep_common.crypto import (
    FORMAT_V1,
    FORMAT_V2,
    DecryptionError,
    SecretBox,
    key_from_server_private_key,
    legacy_key_from_server_private_key,
)

KEY = "0123456789abcdef0123456789abcdef-and-more"


def test_the_key_is_derived_from_the_whole_value_and_the_legacy_key_from_its_first_32_bytes():
    assert len(key_from_server_private_key(KEY)) == 32
    assert key_from_server_private_key(KEY) != KEY.encode()[:32]
    assert key_from_server_private_key(KEY) != key_from_server_private_key(KEY + "!")
    assert legacy_key_from_server_private_key(KEY) == KEY.encode()[:32]
    assert legacy_key_from_server_private_key("é" * 16 + "tail") == ("é" * 16).encode()


def test_round_trip_and_fresh_nonce():
    box = SecretBox(KEY)
    a = box.encrypt("a&b<c>\"d'", b"ca:1")
    b = box.encrypt("a&b<c>\"d'", b"ca:1")
    assert a != b and b"a&b" not in a and a[:1] == FORMAT_V2
    assert box.decrypt(a, b"ca:1") == "a&b<c>\"d'"
    assert box.open(box.seal(b"\x00bytes\xff", b"row"), b"row") == b"\x00bytes\xff"


def test_a_legacy_secret_opens_but_not_as_current():
    nonce = b"\x07" * 12
    legacy = FORMAT_V1 + nonce + AESGCM(KEY.encode()[:32]).encrypt(nonce, b"challenge", b"ca:1")
    box = SecretBox(KEY)
    assert box.decrypt(legacy, b"ca:1") == "challenge"
    assert not box.opens_with_current_key(legacy, b"ca:1")
    assert box.opens_with_current_key(box.encrypt("challenge", b"ca:1"), b"ca:1")


@pytest.mark.parametrize("tamper", ["context", "key", "bit", "truncate", "version", "unknown"])
def test_tampering_is_detected(tamper):
    box = SecretBox(KEY)
    stored = box.encrypt("challenge", b"ca:1")
    context = b"ca:1"
    if tamper == "context":
        context = b"ca:2"
    elif tamper == "key":
        box = SecretBox("another-key-0123456789abcdef0123456789")
    elif tamper == "bit":
        stored = stored[:-1] + bytes([stored[-1] ^ 1])
    elif tamper == "truncate":
        stored = stored[:10]
    elif tamper == "version":
        stored = FORMAT_V1 + stored[1:]
    else:
        stored = b"\x03" + stored[1:]
    with pytest.raises(DecryptionError):
        box.decrypt(stored, context)
