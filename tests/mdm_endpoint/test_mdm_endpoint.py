"""mdm-endpoint against real PostgreSQL, RabbitMQ, an identity scepserver and an HTTP/2 fake APNs."""

from __future__ import annotations

import base64
import datetime
import plistlib

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from hostsim.device import MdmRefused
from mdmscep_common import mdm_commands
from tests.support.bus_listener import BusListener
from tests.support.service_fixtures import ENROLL_SECRET
from tests.support.waiting import eventually


@pytest.fixture
def events(amqp_url):
    listener = BusListener(amqp_url, ["host.*", "command.result"])
    yield listener
    listener.close()


def _host_row(mdm_db, udid):
    with mdm_db.transaction() as conn:
        return conn.execute("SELECT * FROM hosts WHERE uuid = %s", (udid,)).fetchone()


def _snapshot(mdm_db):
    with mdm_db.transaction() as conn:
        return (conn.execute("SELECT * FROM hosts ORDER BY uuid").fetchall(),
                conn.execute("SELECT command_uuid, status, result FROM commands ORDER BY seq").fetchall())


def test_enrollment_profile_requires_the_secret(mdm, mdm_settings, apns_pki, identity_ca):
    for params in ({}, {"secret": "wrong"}, {"secret": ""}):
        assert httpx.get(f"{mdm.url}/mdm/enroll", params=params).status_code == 403
    response = httpx.get(f"{mdm.url}/mdm/enroll", params={"secret": ENROLL_SECRET})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.content)
    payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    scep, mdm_payload = payloads["com.apple.security.scep"], payloads["com.apple.mdm"]
    assert scep["PayloadContent"]["URL"] == identity_ca.url
    assert scep["PayloadContent"]["Challenge"] == "identity-challenge"
    assert mdm_payload["ServerURL"] == f"{mdm_settings.mdm_public_url}/mdm/connect"
    assert mdm_payload["CheckInURL"] == f"{mdm_settings.mdm_public_url}/mdm/checkin"
    assert mdm_payload["Topic"] == apns_pki.topic
    assert mdm_payload["SignMessage"] is True
    assert mdm_payload["IdentityCertificateUUID"] == scep["PayloadUUID"]
    assert mdm_payload["AccessRights"] > 0


def test_host_enrolls_is_pushed_and_gets_its_command(mdm, mdm_db, events, apns_pki):
    host = mdm.new_host()
    row = _host_row(mdm_db, host.udid)
    assert row["enrolled"] and row["serial_number"] == host.serial_number
    assert bytes(row["push_token"]) == host.push_token and row["push_magic"] == host.push_magic
    [(_, enrolled)] = events.wait_for(lambda k, b: k == "host.enrolled"
                                      and b["host_uuid"] == host.udid)
    # The id consumers deduplicate by; the sequence that orders the host's events.
    assert set(enrolled) == {"host_uuid", "facts", "event_id", "sequence"}
    assert enrolled["facts"]["serial_number"] == host.serial_number

    # Enrolled, the host was asked its facts (DeviceInformation, with a push of its own).
    assert any(kind == "DeviceInformation" for kind, *_ in host.handled)
    asked = len(mdm.apns.pushes_for(host.push_token.hex()))
    assert asked == 1

    command_uuid = mdm_commands.new_command_uuid()
    answer = mdm.enqueue([(host.udid, command_uuid, "ProfileList",
                           mdm_commands.profile_list(command_uuid))])
    assert (answer.queued, answer.pushes_requested) == (1, 1)
    # Exactly one push, with the host's token, PushMagic and topic, over the push certificate;
    # the push wakes the host, which fetches and answers the command.
    assert eventually(lambda: ("ProfileList", command_uuid, "Acknowledged") in host.handled)
    pushes = mdm.apns.pushes_for(host.push_token.hex())
    assert len(pushes) == asked + 1
    assert pushes[-1].push_magic == host.push_magic and pushes[-1].topic == apns_pki.topic
    assert apns_pki.topic in pushes[-1].client_subject
    results = events.wait_for(lambda k, b: k == "command.result" and b["command_uuid"] == command_uuid)
    assert results[0][1]["status"] == "Acknowledged"
    assert results[0][1]["request_type"] == "ProfileList"
    assert results[0][1]["profile_list"] == []


def test_enqueue_is_idempotent_and_replaces_stale_commands(mdm, mdm_db):
    host = mdm.new_host()
    first, second = mdm_commands.new_command_uuid(), mdm_commands.new_command_uuid()
    payload = mdm_commands.certificate_list(first)
    assert mdm.enqueue([(host.udid, first, "CertificateList", payload)]).queued == 1
    assert mdm.enqueue([(host.udid, first, "CertificateList", payload)]).queued == 0
    assert mdm.enqueue([(host.udid, second, "CertificateList",
                         mdm_commands.certificate_list(second), first)]).queued == 1
    unknown = mdm_commands.new_command_uuid()
    assert mdm.enqueue([("unknown-host", unknown, "ProfileList",
                         mdm_commands.profile_list(unknown))]).queued == 0
    with mdm_db.transaction() as conn:
        rows = conn.execute("SELECT command_uuid, status FROM commands "
                            "WHERE request_type <> 'DeviceInformation'").fetchall()
    statuses = {r["command_uuid"]: r["status"] for r in rows}
    assert statuses == {first: "replaced", second: "queued"}
    assert eventually(lambda: any(c == second for _, c, _ in host.handled))
    assert all(c != first for _, c, _ in host.handled)


def test_not_now_is_skipped_for_the_connection_and_delivered_later(mdm, mdm_db):
    host = mdm.new_host()
    mdm.fleet._by_token.pop(host.push_token.hex())  # this test drives the host by hand
    a, b = mdm_commands.new_command_uuid(), mdm_commands.new_command_uuid()
    mdm.enqueue([(host.udid, a, "ProfileList", mdm_commands.profile_list(a)),
                 (host.udid, b, "CertificateList", mdm_commands.certificate_list(b))])
    first = plistlib.loads(host.connect({"Status": "Idle"}))
    assert first["CommandUUID"] == a
    second = plistlib.loads(host.connect({"Status": "NotNow", "CommandUUID": a}))
    assert second["CommandUUID"] == b
    assert host.connect(host.handle(second)) == b""  # a is skipped in this connection
    again = plistlib.loads(host.connect({"Status": "Idle"}))
    assert again["CommandUUID"] == a


def test_authenticate_clears_the_queue_and_check_out_unenrolls(mdm, mdm_db, events):
    host = mdm.new_host()
    mdm.fleet._by_token.pop(host.push_token.hex())
    c = mdm_commands.new_command_uuid()
    mdm.enqueue([(host.udid, c, "ProfileList", mdm_commands.profile_list(c))])
    host.checkin({"MessageType": "Authenticate", "Topic": host.topic,
                  "SerialNumber": host.serial_number})
    assert host.connect({"Status": "Idle"}) == b""
    host.check_out()
    assert not _host_row(mdm_db, host.udid)["enrolled"]
    assert events.wait_for(lambda k, b: k == "host.checked_out" and b["host_uuid"] == host.udid)


def test_error_results_carry_the_error_chain(mdm, events):
    host = mdm.new_host()
    mdm.fleet._by_token.pop(host.push_token.hex())
    c = mdm_commands.new_command_uuid()
    mdm.enqueue([(host.udid, c, "InstallProfile", mdm_commands.install_profile(c, b"not a plist"))])
    command = plistlib.loads(host.connect({"Status": "Idle"}))
    result = host.handle(command)
    assert result["Status"] == "Error"
    host.connect(result)
    event = events.wait_for(lambda k, b: k == "command.result" and b["command_uuid"] == c)[0][1]
    assert event["status"] == "Error" and event["request_type"] == "InstallProfile"
    assert "cannot be read" in event["error_chain"][0]["LocalizedDescription"]


def test_unregistered_token_is_marked_and_not_pushed_again(mdm, mdm_db):
    host = mdm.new_host()
    mdm.apns.refusals[host.push_token.hex()] = (410, "Unregistered")
    c = mdm_commands.new_command_uuid()
    mdm.enqueue([(host.udid, c, "ProfileList", mdm_commands.profile_list(c))])
    assert eventually(lambda: _host_row(mdm_db, host.udid)["push_token_invalid_at"] is not None)
    # A fresh TokenUpdate makes the host pushable again.
    del mdm.apns.refusals[host.push_token.hex()]
    host.checkin({"MessageType": "TokenUpdate", "Topic": host.topic, "Token": host.push_token,
                  "PushMagic": host.push_magic})
    assert _host_row(mdm_db, host.udid)["push_token_invalid_at"] is None


def test_hosts_are_listed_in_the_admin_api(mdm, admin):
    host = mdm.new_host()
    listed = admin.get("/api/v1/fleet/hosts").json["hosts"]
    assert any(h["uuid"] == host.udid and h["serial_number"] == host.serial_number
               and h["enrolled"] and h["last_seen_at"].endswith("Z") for h in listed)


# --- identity and signatures ----------------------------------------------------------------

def _foreign_identity():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert, key


def _sign(cert, key, body):
    return base64.b64encode(pkcs7.PKCS7SignatureBuilder().set_data(body)
                            .add_signer(cert, key, hashes.SHA256())
                            .sign(serialization.Encoding.DER,
                                  [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])).decode()


def _put(mdm, path, message, signature):
    body = plistlib.dumps(message)
    headers = {"Mdm-Signature": signature(body)} if signature else {}
    return httpx.put(f"{mdm.url}{path}", content=body, headers=headers)


def test_forged_foreign_and_mismatched_signatures_are_refused_and_change_nothing(mdm, mdm_db):
    a, b = mdm.new_host(), mdm.new_host()
    before = _snapshot(mdm_db)
    foreign_cert, foreign_key = _foreign_identity()
    token_update = {"MessageType": "TokenUpdate", "UDID": a.udid, "Topic": a.topic,
                    "Token": b"\x01" * 32, "PushMagic": "evil"}
    idle = {"Status": "Idle", "UDID": a.udid}
    authenticate = {"MessageType": "Authenticate", "UDID": a.udid, "Topic": a.topic,
                    "SerialNumber": "EVIL"}
    cases = [
        ("/mdm/checkin", token_update, None, 400),                                   # unsigned
        ("/mdm/connect", idle, None, 400),
        ("/mdm/checkin", token_update, lambda body: "not base64!", 400),             # garbage
        ("/mdm/checkin", token_update, lambda body: base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), 400),
        ("/mdm/checkin", token_update, lambda body: _sign(foreign_cert, foreign_key, body), 403),
        ("/mdm/checkin", authenticate, lambda body: _sign(foreign_cert, foreign_key, body), 403),
        ("/mdm/checkin", token_update, lambda body: a.sign(body + b" "), 403),       # not this body
        ("/mdm/checkin", token_update, lambda body: b.sign(body), 403),              # B's cert, A's UDID
        ("/mdm/connect", idle, lambda body: b.sign(body), 403),
        ("/mdm/checkin", {**authenticate, "UDID": a.udid}, lambda body: b.sign(body), 403),
    ]
    for path, message, signature, status in cases:
        response = _put(mdm, path, message, signature)
        assert response.status_code == status, (path, message.get("MessageType"), response.text)
    assert _snapshot(mdm_db) == before


def test_a_new_certificate_rebinds_a_known_udid(mdm, mdm_db):
    host = mdm.new_host()
    old = bytes(_host_row(mdm_db, host.udid)["identity_cert_sha256"])
    host.enroll(ENROLL_SECRET)  # wiped and re-enrolled: new identity, same UDID
    assert bytes(_host_row(mdm_db, host.udid)["identity_cert_sha256"]) != old
    assert host.connect({"Status": "Idle"}) == b""


@pytest.mark.parametrize("body", [b"", b"not a plist", b"<plist><array/></plist>",
                                  plistlib.dumps({"MessageType": "Nope", "UDID": "x"}),
                                  plistlib.dumps({"MessageType": "Authenticate"}),
                                  plistlib.dumps({"MessageType": "TokenUpdate", "UDID": "x"})])
def test_malformed_checkins_are_400(mdm, body):
    host = mdm.new_host()
    response = httpx.put(f"{mdm.url}/mdm/checkin", content=body,
                         headers={"Mdm-Signature": host.sign(body)})
    assert response.status_code == 400


def test_unknown_host_on_connect_is_403(mdm):
    stranger = mdm.new_host()
    with pytest.raises(MdmRefused) as refused:
        stranger.connect({"Status": "Idle", "UDID": "00000000-0000-0000-0000-000000000000"})
    assert refused.value.status == 403


def test_oversized_body_is_413(mdm):
    response = httpx.put(f"{mdm.url}/mdm/connect", content=b"x" * (9 << 20),
                         headers={"Mdm-Signature": "x"})
    assert response.status_code == 413
