"""The Commander's check of what it queues (mdm_endpoint.accepted_commands): the fast recogniser
of InstallProfiles as the processor builds them must never accept bytes a plist parser reads as
anything else, and must accept everything the builder makes."""

from __future__ import annotations

import plistlib

from hypothesis import given, settings
from hypothesis import strategies as st

from mdmscep_common import mdm_commands

COMMAND_UUID = "6E0DB7D6-1D6B-4C2B-9A43-1E0F5F1C2B3A"
BASE = mdm_commands.install_profile(COMMAND_UUID, bytes(range(256)) * 2)


@given(st.binary(max_size=5000))
def test_every_install_profile_the_builder_makes_is_recognised(profile):
    payload = mdm_commands.install_profile(COMMAND_UUID, profile)
    assert mdm_commands.is_install_profile(payload, COMMAND_UUID)
    assert not mdm_commands.is_install_profile(payload, COMMAND_UUID.replace("6", "7"))


@settings(max_examples=1000)
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1),
                          st.sampled_from(list(b"=<>&/+A\n\t x\x00\xff"))), min_size=1, max_size=4),
       st.integers(0, 40), st.binary(max_size=40))
def test_what_the_recogniser_accepts_a_parser_reads_as_that_install_profile(edits, cut, inserted):
    tampered = bytearray(BASE)
    for position, byte in edits:
        tampered[position] = byte
    position = edits[0][0]
    tampered[position:position + cut] = inserted  # and a piece cut out or inserted
    tampered = bytes(tampered)
    if not mdm_commands.is_install_profile(tampered, COMMAND_UUID):
        return  # the Commander parses it instead
    plist = plistlib.loads(tampered, fmt=plistlib.FMT_XML)
    assert plist == {"CommandUUID": COMMAND_UUID,
                     "Command": {"RequestType": "InstallProfile",
                                 "Payload": plist["Command"]["Payload"]}}
    assert isinstance(plist["Command"]["Payload"], bytes)


def _well_formed_base64_lines(data: bytes) -> bool:
    """The rule the recogniser applies to what lies between <data> and </data>, written plainly:
    base64 characters and the line layout only; without the layout, whole quads with padding
    ("=" or "==") only at the end."""
    encoded = data.replace(b"\n", b"").replace(b"\t", b"")
    if any(byte not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
           for byte in encoded):
        return False
    body = encoded.rstrip(b"=")
    return len(encoded) % 4 == 0 and b"=" not in body and len(encoded) - len(body) <= 2


# Pieces of base64 lines, near-valid ones among them (a quad padded once, twice, three times),
# and single characters that shift the quads or break the layout.
PIECES = [b"QUJD", b"QUI=", b"QQ==", b"Q===", b"====", b"=", b"Q", b"\n", b"\t", b"\n\t", b"/+",
          b"x", b"<"]


@settings(max_examples=600)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join))
def test_the_recogniser_counts_quads_and_padding_as_the_plain_rule_does(data):
    layout = mdm_commands._LAYOUT
    payload = (layout.head + data + layout.tail_before + COMMAND_UUID.encode()
               + layout.tail_after)
    assert layout.matches(payload, COMMAND_UUID) is _well_formed_base64_lines(data)
