"""Only the identity CA (MDM_IDENTITY_CA_CERTS) can make device identities (mdm-endpoint,
in-process, on the real tables in a transaction rolled back after each test).

An enrolled device holds a private key and a certificate the identity CA issued. Were that
certificate taken for a CA, the device could issue itself identities and, with them, re-bind
every UDID it knows (an Authenticate signed by a new valid identity re-binds a UDID, for wiped
devices). So the path from the signer to the trust anchor is checked in full: issuers must be
CAs allowed to sign certificates, within their pathLenConstraint, every certificate on the path
valid now, the path no longer than MAX_CHAIN_DEPTH, and the device's own certificate not a CA
and allowed to sign. A refused request changes nothing."""

from __future__ import annotations

import datetime
import hashlib
import logging
import plistlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm_endpoint import identity as identity_module
from mdm_endpoint.app import create_app
from mdm_endpoint.identity import MAX_CHAIN_DEPTH, IdentityVerifier, SignatureInvalid
from mdm_endpoint.service import IDENTITY_REBINDS
from mdm_endpoint.store import CommandStore
from mdmscep_common.health import HealthChecks
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.chain_pki import (
    CA_KEY_USAGE,
    ENCIPHER_ONLY_KEY_USAGE,
    SIGN_ONLY_KEY_USAGE,
    Holder,
    device_identity,
    intermediate_ca,
    issue,
)
from tests.support.identity_pki import IdentityCa
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

VICTIM = "A0A0A0A0-0000-4000-8000-0000000000C1"
ATTACKER = "B0B0B0B0-0000-4000-8000-0000000000C2"
NEWCOMER = "C0C0C0C0-0000-4000-8000-0000000000C3"
QUEUED_COMMAND = "5D1E7A52-0000-4000-8000-0000000000C4"


@pytest.fixture(scope="module")
def pki():
    # The trust anchor as tests/support/identity_pki makes it: cA=TRUE, no keyUsage (allowed:
    # keyCertSign is required only where keyUsage is present).
    ca = IdentityCa("mdmscep chain test identity CA")
    anchor = Holder(ca.certificate, ca.key)
    return {"ca": ca, "anchor": anchor, "victim": ca.issue("victim device"),
            "attacker": ca.issue("attacker device")}


def _app(db, verifier=None, **env):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY, **env})
    publisher = RecordingPublisher()
    app = create_app(settings, db, publisher, HealthChecks({}), verifier=verifier)
    app.testing = True
    return app.test_client(), publisher


@pytest.fixture
def mdm(db, pki):
    return _app(db, IdentityVerifier([pki["ca"].certificate]))


def _send(client, path, signer, message):
    body = plistlib.dumps(message)
    return client.put(path, data=body, headers={"Mdm-Signature": signer.sign(body)})


def _authenticate(client, signer, udid):
    return _send(client, "/mdm/checkin", signer,
                 {"MessageType": "Authenticate", "UDID": udid, "Topic": "t"}).status_code


def _enroll(client, signer, udid):
    assert _authenticate(client, signer, udid) == 200
    assert _send(client, "/mdm/checkin", signer, {
        "MessageType": "TokenUpdate", "UDID": udid, "Topic": "t", "Token": b"\x01" * 32,
        "PushMagic": "magic"}).status_code == 200
    # Enrolled, it is asked its facts first; it answers, as a device does.
    asked = plistlib.loads(_send(client, "/mdm/connect", signer,
                                 {"Status": "Idle", "UDID": udid}).data)
    assert asked["Command"]["RequestType"] == "DeviceInformation"
    assert _send(client, "/mdm/connect", signer, {
        "Status": "Acknowledged", "UDID": udid, "CommandUUID": asked["CommandUUID"],
        "QueryResponses": {"ProductName": "Mac15,3"}}).data == b""


def _state(db_conn):
    return (db_conn.execute("SELECT uuid, identity_cert_sha256, push_token, push_magic, enrolled "
                            "FROM hosts ORDER BY uuid").fetchall(),
            db_conn.execute("SELECT host_uuid, command_uuid, status, result FROM commands "
                            "ORDER BY seq").fetchall())


# --- forged identities --------------------------------------------------------------------------

def _signed_by_a_device(pki):
    """The attack itself: a certificate for a new key, signed with an enrolled device's key
    (its certificate: cA=FALSE, keyUsage digitalSignature + keyEncipherment)."""
    device = Holder(pki["attacker"].certificate, pki["attacker"].key)
    return device_identity("minted by a device", device).with_intermediates(device.certificate)


def _signed_by_a_device_without_basic_constraints(pki):
    # scepserver's identities have no basicConstraints at all: still no CA.
    device = device_identity("scepserver-like device", pki["anchor"])
    return device_identity("minted by a device", device).with_intermediates(device.certificate)


def _under(intermediate, pki, *more):
    return device_identity("device", intermediate).with_intermediates(
        intermediate.certificate, *more)


def _past_path_length(pki):
    constrained = intermediate_ca("pathLen 0 CA", pki["anchor"], path_length=0)
    below = intermediate_ca("CA below a pathLen 0 CA", constrained)
    return _under(below, pki, constrained.certificate)


def _too_long(pki):
    issuer, chain = pki["anchor"], []
    for level in range(MAX_CHAIN_DEPTH):  # one intermediate more than allowed
        issuer = intermediate_ca(f"issuing CA {level}", issuer)
        chain.append(issuer.certificate)
    return device_identity("deep device", issuer).with_intermediates(*reversed(chain))


FORGED = {
    "signed by an enrolled device's key": _signed_by_a_device,
    "signed by a device certificate without basicConstraints":
        _signed_by_a_device_without_basic_constraints,
    "under a cA=FALSE intermediate": lambda p: _under(
        issue("not a CA", p["anchor"], ca=False, key_usage=CA_KEY_USAGE), p),
    "under an intermediate without basicConstraints": lambda p: _under(
        issue("no basicConstraints", p["anchor"], key_usage=CA_KEY_USAGE), p),
    "under an intermediate whose keyUsage lacks keyCertSign": lambda p: _under(
        intermediate_ca("signing-only CA", p["anchor"], key_usage=SIGN_ONLY_KEY_USAGE), p),
    "under an expired intermediate": lambda p: _under(
        intermediate_ca("expired CA", p["anchor"], valid_from_days=-30, valid_days=-1), p),
    "under a not yet valid intermediate": lambda p: _under(
        intermediate_ca("future CA", p["anchor"], valid_from_days=1, valid_days=30), p),
    "past an intermediate's pathLenConstraint": _past_path_length,
    "a leaf that is itself a CA": lambda p: issue(
        "CA as a device", p["anchor"], ca=True, key_usage=CA_KEY_USAGE),
    "a leaf that is a CA without keyUsage": lambda p: issue("CA as a device", p["anchor"], ca=True),
    "a leaf whose keyUsage does not allow digitalSignature": lambda p: device_identity(
        "encipher-only device", p["anchor"], key_usage=ENCIPHER_ONLY_KEY_USAGE),
    "an expired leaf": lambda p: device_identity(
        "expired device", p["anchor"], valid_from_days=-30, valid_days=-1),
    "a path longer than MAX_CHAIN_DEPTH": _too_long,
}


@pytest.mark.parametrize("forgery", FORGED)
def test_a_forged_identity_is_refused_and_changes_nothing(mdm, pki, db_conn, forgery):
    client, publisher = mdm
    _enroll(client, pki["victim"], VICTIM)
    payload = plistlib.dumps({"CommandUUID": QUEUED_COMMAND,
                              "Command": {"RequestType": "ProfileList"}})
    CommandStore().enqueue(db_conn, [(VICTIM, QUEUED_COMMAND, "ProfileList", payload)], [])
    before, published = _state(db_conn), len(publisher.messages)
    rebinds = IDENTITY_REBINDS._value.get()
    forged = FORGED[forgery](pki)

    # Re-binding a known UDID (and with it clearing its queue), enrolling a new one, speaking
    # for the victim: all refused as untrusted signers.
    assert _authenticate(client, forged, VICTIM) == 403
    assert _authenticate(client, forged, NEWCOMER) == 403
    for path, message in (
            ("/mdm/checkin", {"MessageType": "TokenUpdate", "UDID": VICTIM, "Topic": "t",
                              "Token": b"\x02" * 32, "PushMagic": "stolen"}),
            ("/mdm/connect", {"Status": "Idle", "UDID": VICTIM}),
            ("/mdm/connect", {"Status": "Acknowledged", "UDID": VICTIM,
                              "CommandUUID": QUEUED_COMMAND})):
        assert _send(client, path, forged, message).status_code == 403, (path, message)

    assert _state(db_conn) == before
    assert len(publisher.messages) == published
    assert IDENTITY_REBINDS._value.get() == rebinds
    # The victim still speaks for itself and gets its command.
    answer = _send(client, "/mdm/connect", pki["victim"], {"Status": "Idle", "UDID": VICTIM})
    assert answer.status_code == 200 and QUEUED_COMMAND.encode() in answer.data


# --- genuine identities -------------------------------------------------------------------------

def _through(pki, levels):
    issuer, chain = pki["anchor"], []
    for level in range(levels):
        issuer = intermediate_ca(f"issuing CA {level}", issuer)
        chain.append(issuer.certificate)
    return device_identity("device", issuer).with_intermediates(*reversed(chain))


@pytest.mark.parametrize("genuine", [
    pytest.param(lambda p: p["victim"], id="issued by the anchor (basicConstraints cA=FALSE)"),
    pytest.param(lambda p: device_identity("device", p["anchor"]),
                 id="issued by the anchor (no basicConstraints, as scepserver issues)"),
    pytest.param(lambda p: device_identity("device", p["anchor"], key_usage=SIGN_ONLY_KEY_USAGE,
                                           client_auth=False), id="keyUsage digitalSignature only"),
    pytest.param(lambda p: _through(p, 1), id="through one issuing CA"),
    pytest.param(lambda p: _through(p, MAX_CHAIN_DEPTH - 1), id="through the most intermediates"),
])
def test_a_genuine_identity_enrolls_and_speaks_for_its_host(mdm, pki, db_conn, genuine):
    client, _ = mdm
    holder = genuine(pki)
    _enroll(client, holder, NEWCOMER)
    row = db_conn.execute("SELECT identity_cert_sha256, enrolled FROM hosts WHERE uuid = %s",
                          (NEWCOMER,)).fetchone()
    assert bytes(row["identity_cert_sha256"]) == hashlib.sha256(holder.der).digest()
    assert row["enrolled"]
    assert _send(client, "/mdm/connect", holder, {"Status": "Idle", "UDID": NEWCOMER}).status_code \
        == 200


def test_an_expired_trust_anchor_vouches_for_nobody(db, tmp_path):
    """MDM_IDENTITY_CA_CERTS holds the anchor; past its notAfter the identities it issued are
    refused (the credential monitor warns before: docs/operations.md)."""
    anchor = issue("expired identity CA", None, ca=True, key_usage=CA_KEY_USAGE,
                   valid_from_days=-400, valid_days=-1)
    device = device_identity("device", anchor, valid_from_days=-2, valid_days=30)
    path = tmp_path / "identity-ca.pem"
    path.write_bytes(anchor.certificate.public_bytes(serialization.Encoding.PEM))
    client, publisher = _app(db, MDM_IDENTITY_CA_CERTS=str(path))
    assert _authenticate(client, device, NEWCOMER) == 403
    assert publisher.messages == []


# --- a real scepserver's identities ---------------------------------------------------------------

@pytest.fixture(scope="module")
def scep_identity(tmp_path_factory):
    """A device identity from micromdm scepserver through scepclient, as hostsim enrolls."""
    from hostsim.scep import enroll
    from tests.support.scepserver import start_scepserver

    server = start_scepserver(challenge="chain-challenge", organization="mdmscep chain CA",
                              workdir=tmp_path_factory.mktemp("chain-identity-ca"))
    try:
        enrolled = enroll(server.url, "chain-challenge", [[["CN", "scepserver device"]]],
                          workdir=tmp_path_factory.mktemp("chain-scepclient"))
        anchor = x509.load_pem_x509_certificate(server.ca_pem)
    finally:
        server.stop()
    key = serialization.load_pem_private_key(enrolled.key_pem, password=None)
    return anchor, Holder(enrolled.certificate, key)


def test_scepserver_identities_work_and_cannot_mint_more(db, db_conn, scep_identity):
    anchor, device = scep_identity
    client, publisher = _app(db, IdentityVerifier([anchor]))
    _enroll(client, device, VICTIM)
    before = _state(db_conn)
    minted = device_identity("minted by a scepserver device", device).with_intermediates(
        device.certificate)
    assert _authenticate(client, minted, VICTIM) == 403
    assert _authenticate(client, minted, NEWCOMER) == 403
    assert _state(db_conn) == before
    assert _send(client, "/mdm/connect", device, {"Status": "Idle", "UDID": VICTIM}).status_code \
        == 200


# --- what the verifier remembers ------------------------------------------------------------------

BODY = plistlib.dumps({"Status": "Idle", "UDID": VICTIM})


def test_a_remembered_path_does_not_vouch_for_other_certificates(pki):
    """A path is remembered for the exact certificates sent: the same device certificate
    without the intermediate that made its path is refused."""
    issuing = intermediate_ca("issuing CA", pki["anchor"])
    device = _under(issuing, pki)
    verifier = IdentityVerifier([pki["ca"].certificate])
    verifier.verify(device.sign(BODY), BODY)
    with pytest.raises(SignatureInvalid):
        verifier.verify(device.with_intermediates().sign(BODY), BODY)
    # And the signature over the body is checked every time.
    with pytest.raises(SignatureInvalid):
        verifier.verify(device.sign(BODY), BODY + b" ")


def test_a_remembered_path_is_checked_again_for_validity(pki, monkeypatch):
    """Once a certificate on a remembered path (here the intermediate) expires, the path no
    longer vouches for the device, though the device certificate itself is still valid."""
    issuing = intermediate_ca("short-lived CA", pki["anchor"], valid_days=2)
    device = device_identity("device", issuing, valid_days=30).with_intermediates(
        issuing.certificate)
    verifier = IdentityVerifier([pki["ca"].certificate])
    header = device.sign(BODY)
    verifier.verify(header, BODY)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    monkeypatch.setattr(identity_module, "_now", lambda: later)
    with pytest.raises(SignatureInvalid):
        verifier.verify(header, BODY)


def test_no_identity_ca_vouches_for_nobody(pki):
    with pytest.raises(SignatureInvalid):
        IdentityVerifier([]).verify(pki["victim"].sign(BODY), BODY)


@pytest.mark.parametrize("anchor_extensions", [
    pytest.param({"key_usage": CA_KEY_USAGE}, id="no basicConstraints"),
    pytest.param({"ca": False}, id="cA=FALSE"),
    pytest.param({"ca": True, "key_usage": SIGN_ONLY_KEY_USAGE}, id="keyUsage without keyCertSign"),
])
def test_an_anchor_that_cannot_issue_is_named_at_start_and_vouches_for_nobody(
        anchor_extensions, caplog):
    anchor = issue("misconfigured identity CA", None, **anchor_extensions)
    with caplog.at_level(logging.WARNING, logger="mdm_endpoint.identity"):
        verifier = IdentityVerifier([anchor.certificate])
    [warning] = [r for r in caplog.records if "cannot issue device identities" in r.getMessage()]
    assert "misconfigured identity CA" in warning.subject
    with pytest.raises(SignatureInvalid):
        verifier.verify(device_identity("device", anchor).sign(BODY), BODY)
