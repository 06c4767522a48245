"""MDM message parsing against golden plists (tests/mdm_endpoint/testdata/mdm)."""

from pathlib import Path

import pytest

from mdm_endpoint.protocol import Authenticate, ProtocolError, TokenUpdate, parse_checkin, parse_result

DATA = Path(__file__).parent / "testdata" / "mdm"


def test_authenticate():
    message = parse_checkin((DATA / "Authenticate.plist").read_bytes())
    assert message == Authenticate("564D9F2A-1C1B-4E77-9F55-7C2C3F8B1A2E", "C02XK1ABJG5J",
                                   "com.apple.mgmt.External.7d8e3c4a-9b1f-4e2b-8a6d-1c2b3a4d5e6f",
                                   "Anna’s MacBook Pro", "Mac15,3", "15.1")


def test_token_update_keeps_an_iphone_udid_as_sent():
    message = parse_checkin((DATA / "TokenUpdate.plist").read_bytes())
    assert isinstance(message, TokenUpdate)
    assert message.udid == "00008030-001A2B3C4D5E6F70"
    assert len(message.token) == 32 and message.push_magic.startswith("2E9D0B4E")


def test_profile_list_event():
    result = parse_result((DATA / "ProfileList.plist").read_bytes())
    assert result.status == "Acknowledged"
    assert result.event("ProfileList")["profile_list"] == [
        {"identifier": "Fleet.custom.SCEP", "uuid": "4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC",
         "display_name": "SCEP proxy cert"}]


def test_error_event_keeps_the_chain():
    event = parse_result((DATA / "Error.plist").read_bytes()).event("InstallProfile")
    assert event["status"] == "Error"
    assert [e["ErrorCode"] for e in event["error_chain"]] == [4001, 22013]


@pytest.mark.parametrize("body", [
    b"", b"\x00\x01", b"<plist><string>x</string></plist>",
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]>'
    b"<plist><dict><key>k</key><string>&a;</string></dict></plist>",
    b"bplist00\xd1\x01\x02",
    b'<?xml version="1.0" encoding="U-F-8"?><plist><dict/></plist>',  # found by fuzzing
])
def test_garbage_is_a_protocol_error(body):
    with pytest.raises(ProtocolError):
        parse_checkin(body)
    with pytest.raises(ProtocolError):
        parse_result(body)
