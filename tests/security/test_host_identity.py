"""Host identity cannot be spoofed and enrollment needs the secret (mdm-endpoint, in-process, on
the real tables in a transaction rolled back after each test).

Every message is signed (Mdm-Signature) by a certificate the identity CA issued, and only the
certificate bound to a UDID speaks for it. What the contract allows on purpose is spelled out in
test_a_valid_identity_can_rebind_a_known_udid (see the report: a finding about that rule)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import plistlib

import pytest

from mdm_endpoint import views
from mdm_endpoint.app import create_app
from mdm_endpoint.identity import IdentityVerifier
from mdm_endpoint.service import IDENTITY_REBINDS
from mdmscep_common.health import HealthChecks
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.identity_pki import IdentityCa, self_signed
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

ENROLL_SECRET = "s3cret-enroll-Pz9"
UDID_A = "A0A0A0A0-0000-4000-8000-00000000000A"
UDID_B = "B0B0B0B0-0000-4000-8000-00000000000B"


@pytest.fixture(scope="module")
def pki():
    ca = IdentityCa()
    return {"ca": ca, "a": ca.issue("host a"), "b": ca.issue("host b"),
            "impostor": self_signed(), "foreign": IdentityCa("other").issue("x")}


def _app(db, pki, **env):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "IDENTITY_SCEP_URL": "http://identity.test/scep",
                              "IDENTITY_SCEP_CHALLENGE": "identity-challenge", **env})
    publisher = RecordingPublisher()
    app = create_app(settings, db, publisher, HealthChecks({}),
                     verifier=IdentityVerifier([pki["ca"].certificate]))
    app.testing = True
    return app, publisher


@pytest.fixture
def mdm(db, pki):
    app, publisher = _app(db, pki, ENROLL_SECRET=ENROLL_SECRET)
    return app.test_client(), publisher


def _send(client, path, identity, message, body=None):
    data = body if body is not None else plistlib.dumps(message)
    headers = {"Mdm-Signature": identity.sign(plistlib.dumps(message))} if identity else {}
    return client.put(path, data=data, headers=headers)


def _enroll(client, identity, udid):
    assert _send(client, "/mdm/checkin", identity, {"MessageType": "Authenticate", "UDID": udid,
                                                    "Topic": "t"}).status_code == 200
    assert _send(client, "/mdm/checkin", identity, {
        "MessageType": "TokenUpdate", "UDID": udid, "Topic": "t", "Token": b"\x01" * 32,
        "PushMagic": "magic"}).status_code == 200


def _host(db_conn, udid):
    return db_conn.execute("SELECT * FROM hosts WHERE uuid = %s", (udid,)).fetchone()


# --- enrollment ------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "?secret=", "?secret=wrong", f"?secret={ENROLL_SECRET}x",
                                   f"?secret={ENROLL_SECRET[:-1]}", f"?Secret={ENROLL_SECRET}"])
def test_enrollment_needs_the_exact_secret(mdm, query):
    client, _ = mdm
    response = client.get("/mdm/enroll" + query)
    assert response.status_code == 403
    assert ENROLL_SECRET not in response.get_data(as_text=True)
    assert b"identity-challenge" not in response.data


def test_enrollment_with_the_secret_serves_the_profile(mdm):
    client, _ = mdm
    response = client.get(f"/mdm/enroll?secret={ENROLL_SECRET}")
    assert response.status_code == 200
    assert response.mimetype == "application/x-apple-aspen-config"


def test_enrollment_is_closed_without_a_configured_secret(db, pki):
    app, _ = _app(db, pki)
    client = app.test_client()
    for query in ("", "?secret=", "?secret=None"):
        assert client.get("/mdm/enroll" + query).status_code == 403


def test_the_secret_is_compared_in_constant_time(mdm, monkeypatch):
    client, _ = mdm
    calls, real = [], hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(views.hmac, "compare_digest", recording)
    client.get("/mdm/enroll?secret=guess")
    assert calls == [(b"guess", ENROLL_SECRET.encode())]


# --- identity -------------------------------------------------------------------------------

def test_unsigned_and_malformed_messages_are_refused_and_store_nothing(mdm, db_conn):
    client, publisher = mdm
    message = {"MessageType": "Authenticate", "UDID": UDID_A, "Topic": "t"}
    assert _send(client, "/mdm/checkin", None, message).status_code == 400
    bad = client.put("/mdm/checkin", data=plistlib.dumps(message),
                     headers={"Mdm-Signature": "bm90IGNtcw=="})
    assert bad.status_code == 400
    assert _host(db_conn, UDID_A) is None and publisher.messages == []


@pytest.mark.parametrize("who", ["impostor", "foreign"])
def test_a_certificate_the_identity_ca_did_not_issue_is_refused(mdm, pki, db_conn, who):
    client, publisher = mdm
    response = _send(client, "/mdm/checkin", pki[who],
                     {"MessageType": "Authenticate", "UDID": UDID_A, "Topic": "t"})
    assert response.status_code == 403
    assert _host(db_conn, UDID_A) is None and publisher.messages == []


def test_a_signature_over_another_body_is_refused(mdm, pki, db_conn):
    client, _ = mdm
    signed = {"MessageType": "Authenticate", "UDID": UDID_A, "Topic": "t"}
    sent = plistlib.dumps({**signed, "UDID": UDID_B})
    response = _send(client, "/mdm/checkin", pki["a"], signed, body=sent)
    assert response.status_code == 403 and _host(db_conn, UDID_B) is None


def test_one_hosts_certificate_cannot_speak_for_another(mdm, pki, db_conn):
    client, publisher = mdm
    _enroll(client, pki["a"], UDID_A)
    _enroll(client, pki["b"], UDID_B)
    before = dict(_host(db_conn, UDID_B))
    published = len(publisher.messages)
    for path, message in (
            ("/mdm/connect", {"Status": "Idle", "UDID": UDID_B}),
            ("/mdm/connect", {"Status": "Acknowledged", "UDID": UDID_B, "CommandUUID": "c"}),
            ("/mdm/checkin", {"MessageType": "TokenUpdate", "UDID": UDID_B, "Topic": "t",
                              "Token": b"\x02" * 32, "PushMagic": "stolen"}),
            ("/mdm/checkin", {"MessageType": "CheckOut", "UDID": UDID_B}),
            # Authenticate with a certificate already bound to another UDID.
            ("/mdm/checkin", {"MessageType": "Authenticate", "UDID": UDID_B, "Topic": "t"})):
        response = _send(client, path, pki["a"], message)
        assert response.status_code == 403, (path, message, response.status_code)
    after = dict(_host(db_conn, UDID_B))
    for column in ("identity_cert_sha256", "push_token", "push_magic", "enrolled"):
        assert after[column] == before[column], column
    assert len(publisher.messages) == published


def test_a_valid_identity_can_rebind_a_known_udid(mdm, pki, db_conn, caplog):
    """On purpose (README.md "Apple MDM endpoint": a wiped device re-enrolls with a new
    certificate): an
    Authenticate signed by any certificate of the identity CA that is not yet bound re-binds the
    UDID; the old certificate then speaks for it no more. So whoever can obtain an identity
    certificate (the enrollment secret gives the identity SCEP challenge) could take a known UDID
    over: every re-bind is a warning line naming both certificates, and a metric."""
    client, _ = mdm
    rebinds = IDENTITY_REBINDS._value.get()
    _enroll(client, pki["a"], UDID_A)
    _enroll(client, pki["a"], UDID_A)  # the same certificate again: not a re-bind
    assert IDENTITY_REBINDS._value.get() == rebinds
    fresh = pki["ca"].issue("wiped host a")
    with caplog.at_level(logging.WARNING, logger="mdm_endpoint.service"):
        assert _send(client, "/mdm/checkin", fresh, {"MessageType": "Authenticate",
                                                     "UDID": UDID_A, "Topic": "t"}).status_code == 200
    assert IDENTITY_REBINDS._value.get() == rebinds + 1
    [warning] = [r for r in caplog.records if r.getMessage() == "host re-bound to a new "
                                                                  "identity certificate"]
    assert warning.host_uuid == UDID_A
    assert warning.previous_certificate_sha256 == hashlib.sha256(pki["a"].der).hexdigest()
    assert warning.certificate_sha256 == hashlib.sha256(fresh.der).hexdigest()
    assert _send(client, "/mdm/connect", pki["a"],
                 {"Status": "Idle", "UDID": UDID_A}).status_code == 403
    assert _send(client, "/mdm/connect", fresh, {"Status": "Idle", "UDID": UDID_A}).status_code == 200
