"""Random and mutated plists and signatures to /mdm/checkin and /mdm/connect never give a 5xx."""

from __future__ import annotations

import base64
import plistlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdm_endpoint.app import create_app
from mdmscep_common.health import HealthChecks
from tests.support.recording_publisher import RecordingPublisher

PLIST_TEXT = st.characters(blacklist_categories=("Cc", "Cs"))  # what a plist can carry
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def fuzz_target(mdm, mdm_settings, mdm_db):
    host = mdm.new_host()
    app = create_app(mdm_settings, mdm_db, RecordingPublisher(), HealthChecks({}))
    return app.test_client(), host


def _valid_messages(host):
    return [
        {"MessageType": "Authenticate", "UDID": host.udid, "Topic": host.topic,
         "SerialNumber": host.serial_number},
        {"MessageType": "TokenUpdate", "UDID": host.udid, "Topic": host.topic,
         "Token": host.push_token, "PushMagic": host.push_magic},
        {"Status": "Idle", "UDID": host.udid},
        {"Status": "Acknowledged", "UDID": host.udid, "CommandUUID": "X",
         "ProfileList": [{"PayloadIdentifier": "a"}]},
    ]


def _mutate(data: bytes, positions: list[int], byte: int) -> bytes:
    out = bytearray(data)
    for p in positions:
        if out:
            out[p % len(out)] = byte
    return bytes(out)


SIGNATURES = st.one_of(st.none(), st.text(PLIST_TEXT, max_size=200),
                       st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()))


@given(body=st.binary(max_size=2000), signature=SIGNATURES)
@FUZZ
def test_random_bodies_and_signatures(fuzz_target, body, signature):
    client, _ = fuzz_target
    headers = {"Mdm-Signature": signature} if signature is not None else {}
    for path in ("/mdm/checkin", "/mdm/connect"):
        assert client.put(path, data=body, headers=headers).status_code < 500


@given(which=st.integers(0, 3), positions=st.lists(st.integers(0, 10_000), max_size=4),
       byte=st.integers(0, 255), sign_mutated=st.booleans(),
       extra=st.dictionaries(st.text(PLIST_TEXT, max_size=10), st.one_of(
           st.text(PLIST_TEXT, max_size=20), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=20),
           st.booleans(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)), max_size=3))
@FUZZ
def test_mutated_signed_messages(fuzz_target, which, positions, byte, sign_mutated, extra):
    client, host = fuzz_target
    message = {**_valid_messages(host)[which], **extra}
    body = plistlib.dumps(message)
    mutated = _mutate(body, positions, byte)
    signature = host.sign(mutated if sign_mutated else body)
    for path in ("/mdm/checkin", "/mdm/connect"):
        response = client.put(path, data=mutated, headers={"Mdm-Signature": signature})
        assert response.status_code < 500, response.get_data(as_text=True)
