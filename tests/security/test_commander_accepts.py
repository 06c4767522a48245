"""The Commander queues only the commands the product sends, as they were declared.

Through the real gRPC Commander (mutual TLS, as the profile-processor), real PostgreSQL and
RabbitMQ: a call with one command that is not InstallProfile / RemoveProfile / ProfileList /
CertificateList, or whose plist says something other than its declared request_type and
command_uuid (an EraseDevice labelled InstallProfile, say), is refused with INVALID_ARGUMENT naming
the problem; nothing of that call is queued and no push is requested. The same call, fixed, is
queued and reaches the host.
"""

from __future__ import annotations

import plistlib

import grpc
import pytest

from mdmscep_common import mdm_commands
from tests.support.bus_listener import BusListener
from tests.support.polled_mdm import (  # noqa: F401 - fixtures this module uses
    apns_pki,
    clean_hosts,
    commander,
    fake_apns,
    identity_ca,
    mdm,
    mdm_db,
    mdm_relay,
    mdm_server,
    mdm_settings,
    push_router,
)

new_uuid = mdm_commands.new_command_uuid


def _plist(value, fmt=plistlib.FMT_XML) -> bytes:
    return plistlib.dumps(value, fmt=fmt)


def _erase_device(command_uuid: str) -> bytes:
    return _plist({"CommandUUID": command_uuid,
                   "Command": {"RequestType": "EraseDevice", "PIN": "123456"}})


def _smuggled_install(command_uuid: str) -> bytes:
    """An InstallProfile whose Command says RequestType twice: plistlib keeps the last."""
    return mdm_commands.install_profile(command_uuid, b"profile").replace(
        b"<key>Payload</key>",
        b"<key>RequestType</key><string>EraseDevice</string><key>Payload</key>", 1)


# (declared request_type, payload maker, what the refusal must say)
REFUSED = {
    "EraseDevice labelled InstallProfile": (
        "InstallProfile", _erase_device,
        "Command.RequestType ('EraseDevice') is not the declared request_type 'InstallProfile'"),
    "a request type the product never sends": (
        "EraseDevice", _erase_device, "request_type 'EraseDevice' is not one of"),
    "another command's UUID": (
        "ProfileList", lambda c: mdm_commands.profile_list(new_uuid()),
        "CommandUUID is not the declared command_uuid"),
    "not a plist": ("ProfileList", lambda c: b"EraseDevice please", "not an XML property list"),
    "a binary plist": ("ProfileList", lambda c: _plist(
        {"CommandUUID": c, "Command": {"RequestType": "ProfileList"}}, plistlib.FMT_BINARY),
        "not an XML property list"),
    "not a dictionary": ("ProfileList", lambda c: _plist([c]), "not a dictionary"),
    "no Command": ("ProfileList", lambda c: _plist({"CommandUUID": c}), "no Command dictionary"),
    "InstallProfile whose Payload is not data": ("InstallProfile", lambda c: _plist(
        {"CommandUUID": c, "Command": {"RequestType": "InstallProfile", "Payload": "<dict/>"}}),
        "InstallProfile's Command.Payload must be data"),
    "a key given twice": ("InstallProfile", _smuggled_install, "the key 'RequestType' twice"),
    "too large": ("InstallProfile",
                  lambda c: mdm_commands.install_profile(c, b"x" * (3 << 20) + b"y" * (1 << 20)),
                  "larger than 4194304 bytes"),
    "empty": ("ProfileList", lambda c: b"", "payload is empty"),
}


@pytest.fixture
def pushes(amqp_url):
    listener = BusListener(amqp_url, ["push.requested"])
    yield listener
    listener.close()


def _queued(db, command_uuids) -> list[str]:
    with db.transaction() as conn:
        return [r["command_uuid"] for r in conn.execute(
            "SELECT command_uuid FROM commands WHERE command_uuid = ANY(%s)",
            (list(command_uuids),)).fetchall()]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_call_with_one_unacceptable_command_queues_nothing_and_pushes_nothing(  # noqa: F811
        case, mdm, mdm_db, pushes):  # noqa: F811 - fixtures
    request_type, make_payload, reason = REFUSED[case]
    host, witness = mdm.new_host(), mdm.new_host()
    # Their enrollments asked their facts, with pushes: those are not this call's.
    for enrolled in (host, witness):
        assert pushes.wait_for(lambda key, body, h=enrolled: h.udid in body["host_uuids"])
    pushes.received.clear()
    good = [new_uuid(), new_uuid()]
    bad = new_uuid()
    batch = [(host.udid, good[0], "ProfileList", mdm_commands.profile_list(good[0])),
             (host.udid, good[1], "CertificateList", mdm_commands.certificate_list(good[1])),
             (host.udid, bad, request_type, make_payload(bad))]

    with pytest.raises(grpc.RpcError) as refused:
        mdm.enqueue(batch)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"command 2 ({bad})" in refused.value.details() and reason in refused.value.details()
    assert "nothing of this call was queued" in refused.value.details()
    assert _queued(mdm_db, [*good, bad]) == []
    # Pushes are published in order: once the witness's (a later, valid call) is seen, a push
    # for `host` would have been seen before it.
    witness_command = new_uuid()
    assert mdm.enqueue([(witness.udid, witness_command, "ProfileList",
                         mdm_commands.profile_list(witness_command))]).queued == 1
    assert pushes.wait_for(lambda key, body: witness.udid in body["host_uuids"], timeout=10)
    assert not [body for _, body in pushes.received if host.udid in body["host_uuids"]]
    assert host.connect({"Status": "Idle"}) == b""  # the host has nothing queued

    # The same call without the bad command is queued, and the host runs it.
    answer = mdm.enqueue(batch[:2])
    assert (answer.queued, answer.pushes_requested) == (2, 1)
    assert plistlib.loads(host.connect({"Status": "Idle"}))["CommandUUID"] == good[0]


def test_every_command_the_processor_builds_is_accepted(mdm, mdm_db):  # noqa: F811 - fixtures
    host = mdm.new_host()
    uuids = [new_uuid() for _ in range(5)]
    profile = b'<?xml version="1.0"?><plist version="1.0"><dict/></plist>'
    batch = [(host.udid, uuids[0], "InstallProfile", mdm_commands.install_profile(uuids[0], profile)),
             (host.udid, uuids[1], "InstallProfile",  # not the fast builder's layout: parsed
              plistlib.dumps({"CommandUUID": uuids[1],
                              "Command": {"RequestType": "InstallProfile", "Payload": b""}},
                             sort_keys=False)),
             (host.udid, uuids[2], "RemoveProfile", mdm_commands.remove_profile(uuids[2], "a.b")),
             (host.udid, uuids[3], "ProfileList", mdm_commands.profile_list(uuids[3])),
             (host.udid, uuids[4], "CertificateList", mdm_commands.certificate_list(uuids[4]))]
    assert mdm.enqueue(batch).queued == 5
    answer, received = host.connect({"Status": "Idle"}), []
    while answer:
        command = plistlib.loads(answer)
        received.append((command["CommandUUID"], command["Command"]["RequestType"]))
        answer = host.connect({"Status": "Acknowledged", "CommandUUID": command["CommandUUID"]})
    assert received == [(c[1], c[2]) for c in batch]
