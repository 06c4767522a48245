import pytest

from mdmscep_common.crypto import DecryptionError, SecretBox, key_from_server_private_key

KEY = "0123456789abcdef0123456789abcdef-and-more"


def test_key_is_the_first_32_utf8_bytes():
    assert key_from_server_private_key(KEY) == KEY.encode()[:32]
    assert key_from_server_private_key("é" * 16 + "tail") == ("é" * 16).encode()


def test_round_trip_and_fresh_nonce():
    box = SecretBox(KEY)
    a = box.encrypt("a&b<c>\"d'", b"ca:1")
    b = box.encrypt("a&b<c>\"d'", b"ca:1")
    assert a != b and b"a&b" not in a
    assert box.decrypt(a, b"ca:1") == "a&b<c>\"d'"


@pytest.mark.parametrize("tamper", ["context", "key", "bit", "truncate", "version"])
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
    else:
        stored = b"\x02" + stored[1:]
    with pytest.raises(DecryptionError):
        box.decrypt(stored, context)
