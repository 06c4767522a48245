"""The fast paths of issue 10 do what the straightforward code did:

- InstallProfile command plists (mdm_commands.install_profile, built without plistlib's writer)
  are byte for byte plistlib's;
- the Mdm-Signature verifier that remembers parsed certificate sets and signature parts decides
  every (mutated) signature as the full parse of every request did;
- the one-statement /mdm/connect exchange leaves the tables as seen + record_result +
  next_command did;
- the HTTP/2 push client answers per host as APNs answered, over several connections, and
  recovers from a lost connection.
"""

from __future__ import annotations

import base64
import binascii
import plistlib

import pytest
from asn1crypto import cms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdm_endpoint import identity as identity_module
from mdm_endpoint.identity import (
    IdentityVerifier,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
)
from mdm_endpoint.store import CommandStore, HostStore
from mdmscep_common import mdm_commands
from tests.support.identity_pki import IdentityCa

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- InstallProfile plists -----------------------------------------------------------------------

def _plistlib(command_uuid: str, payload: bytes) -> bytes:
    """The straightforward build the fast one must equal."""
    return plistlib.dumps({"CommandUUID": command_uuid, "Command": {
        "RequestType": "InstallProfile", "Payload": payload}}, fmt=plistlib.FMT_XML, sort_keys=True)


@given(payload=st.binary(max_size=5000))
@settings(max_examples=300, deadline=None)
def test_install_profile_command_is_plistlibs(payload):
    command_uuid = mdm_commands.new_command_uuid()
    assert mdm_commands.install_profile(command_uuid, payload) == _plistlib(command_uuid, payload)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 44, 45, 46, 450, 45 * 1000, 45 * 1000 + 1, 45 * 1001])
def test_install_profile_command_is_plistlibs_at_line_boundaries(size):
    """Payloads whose base64 ends on a line's end, and around the largest cut in one piece."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    command_uuid = mdm_commands.new_command_uuid()
    assert mdm_commands.install_profile(command_uuid, payload) == _plistlib(command_uuid, payload)


@pytest.mark.parametrize("command_uuid", ["A&B", "<x>", "plain-but-ünïcode", ""])
def test_unusual_command_uuids_go_through_plistlib(command_uuid):
    assert mdm_commands.install_profile(command_uuid, b"payload") == \
        _plistlib(command_uuid, b"payload")


# --- Mdm-Signature ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki():
    ca = IdentityCa()
    return ca, ca.issue("HOST-UDID-1"), ca.issue("HOST-UDID-2", ec_key=True)


def _old_signed_data(header, parsed=None):
    """The verifier's parse before issue 10: everything, every time (`signed.native`)."""
    if len(header) > identity_module.MAX_SIGNATURE_HEADER_CHARS:
        raise SignatureMalformed("Mdm-Signature is too large")
    try:
        der = base64.b64decode("".join(header.split()), validate=True)
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise SignatureMalformed("Mdm-Signature is not CMS SignedData")
        signed = info["content"]
        signed.native  # noqa: B018
        return signed, None
    except SignatureMalformed:
        raise
    except (binascii.Error, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise SignatureMalformed(f"Mdm-Signature is not valid CMS: {exc.__class__.__name__}") from None


def _decision(verifier, header, body):
    try:
        return ("ok", verifier.verify(header, body).sha256)
    except (SignatureMissing, SignatureMalformed) as exc:
        return ("400", exc.__class__.__name__)
    except SignatureInvalid as exc:
        return ("403", str(exc))
    except Exception as exc:  # noqa: BLE001 - what escaped is compared too
        return ("500", exc.__class__.__name__)


def _reference(ca, header, body, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(identity_module, "_signed_data", _old_signed_data)
        return _decision(IdentityVerifier([ca.certificate]), header, body)


@given(which=st.integers(0, 1), positions=st.lists(st.integers(0, 4000), min_size=1, max_size=3),
       byte=st.integers(0, 255), other_body=st.booleans())
@FUZZ
def test_a_warm_verifier_decides_like_a_full_parse(pki, monkeypatch, which, positions, byte,
                                                   other_body):
    ca, *hosts = pki
    host = hosts[which]
    body = plistlib.dumps({"Status": "Idle", "UDID": f"HOST-UDID-{which + 1}"})
    good = host.sign(body)
    warm = IdentityVerifier([ca.certificate])
    assert _decision(warm, good, body)[0] == "ok"  # its parts are remembered now
    der = bytearray(base64.b64decode(good))
    for p in positions:
        der[p % len(der)] = byte
    mutated = base64.b64encode(bytes(der)).decode()
    sent_body = body + b" " if other_body else body
    assert _decision(warm, mutated, sent_body) == _reference(ca, mutated, sent_body, monkeypatch)
    # And the good signature still verifies afterwards.
    assert _decision(warm, good, body)[0] == "ok"


def test_remembered_parts_do_not_outlive_other_hosts(pki):
    ca, first, second = pki
    verifier = IdentityVerifier([ca.certificate])
    body = b"<plist/>"
    one, two = verifier.verify(first.sign(body), body), verifier.verify(second.sign(body), body)
    assert one.sha256 != two.sha256
    assert verifier.verify(first.sign(body), body).sha256 == one.sha256
    with pytest.raises(SignatureInvalid):
        verifier.verify(first.sign(body), body + b"x")


# --- /mdm/connect in one statement --------------------------------------------------------------

def _commands(conn):
    return conn.execute("SELECT host_uuid, command_uuid, status, result, delivered_at, completed_at "
                        "FROM commands ORDER BY seq").fetchall()


def _seed(conn):
    conn.execute("INSERT INTO hosts (uuid, identity_cert_sha256, enrolled) VALUES "
                 "('H1', '\\x01', true), ('H2', '\\x02', true), ('H3', NULL, true)")
    for host, uuid, status in (("H1", "A", "queued"), ("H1", "B", "not_now"), ("H1", "C", "queued"),
                               ("H2", "D", "queued"), ("H1", "E", "acknowledged")):
        conn.execute("INSERT INTO commands (host_uuid, command_uuid, request_type, payload, status) "
                     "VALUES (%s, %s, 'ProfileList', '\\x00', %s)", (host, uuid, status))


def _sequential(conn, udid, identity, status, command_uuid, raw):
    hosts, commands = HostStore(), CommandStore()
    bound = hosts.seen(conn, udid)
    if bound != identity:
        return bound, None, None
    recorded = None if status == "Idle" else commands.record_result(conn, udid, command_uuid,
                                                                    status, raw)
    return bound, recorded, commands.next_command(conn, udid, include_not_now=status == "Idle")


@pytest.mark.parametrize("udid,identity,status,command_uuid", [
    ("H1", b"\x01", "Idle", ""),
    ("H1", b"\x01", "Acknowledged", "A"),
    ("H1", b"\x01", "NotNow", "A"),
    ("H1", b"\x01", "Error", "C"),
    ("H1", b"\x01", "CommandFormatError", "B"),
    ("H1", b"\x01", "Acknowledged", "E"),
    ("H1", b"\x01", "Acknowledged", "D"),        # another host's command
    ("H1", b"\x01", "Acknowledged", "UNKNOWN"),
    ("H1", b"\x09", "Acknowledged", "A"),        # not the bound certificate
    ("H3", b"\x03", "Idle", ""),                 # no certificate bound
    ("NOBODY", b"\x01", "Idle", ""),
])
def test_exchange_is_seen_record_and_next(db_conn, udid, identity, status, command_uuid):
    _seed(db_conn)
    raw = b"<plist>result</plist>"
    with db_conn.transaction(force_rollback=True):
        expected = _sequential(db_conn, udid, identity, status, command_uuid, raw)
        expected_rows = _commands(db_conn)
    with db_conn.transaction(force_rollback=True):
        got = CommandStore().exchange(db_conn, udid, identity, status, command_uuid, raw)
        rows = _commands(db_conn)
    assert got == expected
    if expected[0] == identity:
        assert rows == expected_rows
    else:  # refused (403): the service rolls back; nothing else was touched meanwhile
        with db_conn.transaction(force_rollback=True):
            assert rows == _commands(db_conn)


# --- pushes over HTTP/2 -------------------------------------------------------------------------

@pytest.fixture
def apns(tmp_path):
    from hostsim.fake_apns import FakeApns
    from hostsim.pki import make_apns_pki

    pki = make_apns_pki(tmp_path / "apns")
    servers = []

    def start(port=0):
        server = FakeApns(str(pki.server_cert), str(pki.server_key), str(pki.push_ca),
                          port=port).start()
        servers.append(server)
        return server

    yield pki, start
    for server in servers:
        try:
            server.stop()
        except RuntimeError:
            pass  # stopped by the test


def _targets(n, topic):
    from mdm_endpoint.store import PushTarget

    return [PushTarget(f"HOST-{i}", i.to_bytes(4, "big") * 8, f"magic-{i}", topic)
            for i in range(n)]


def test_pushes_are_answered_per_host_over_several_connections(apns):
    from mdm_endpoint.push import ApnsClient

    pki, start = apns
    fake = start()
    targets = _targets(1500, pki.topic)
    fake.refusals[targets[7].token.hex()] = (410, "Unregistered")
    fake.refusals[targets[900].token.hex()] = (400, "BadDeviceToken")
    client = ApnsClient(fake.url, str(pki.push_cert), str(pki.push_key), str(pki.server_ca))
    try:
        outcomes = client.send(targets)
    finally:
        client.close()
    assert [o.host_uuid for o in outcomes] == [t.host_uuid for t in targets]
    assert (outcomes[7].status, outcomes[7].reason, outcomes[7].token_invalid) == \
        (410, "Unregistered", True)
    assert (outcomes[900].status, outcomes[900].reason) == (400, "BadDeviceToken")
    assert sum(o.delivered for o in outcomes) == 1498
    assert fake.connections >= 2
    got = {(p.token, p.push_magic, p.topic) for p in fake.pushes}
    assert got == {(t.token.hex(), t.push_magic, t.topic) for i, t in enumerate(targets)
                   if i not in (7, 900)}
    assert all(pki.topic in p.client_subject for p in fake.pushes)


def test_a_bad_topic_fails_alone_and_no_topic_is_sent_without_the_header(apns):
    from mdm_endpoint.push import ApnsClient
    from mdm_endpoint.store import PushTarget

    pki, start = apns
    fake = start()
    targets = [PushTarget("BAD", b"\x01" * 32, "m", "topic\nwith newline"),
               PushTarget("NONE", b"\x02" * 32, "m", ""), *_targets(3, pki.topic)]
    client = ApnsClient(fake.url, str(pki.push_cert), str(pki.push_key), str(pki.server_ca))
    try:
        outcomes = client.send(targets)
    finally:
        client.close()
    assert (outcomes[0].status, outcomes[0].reason, outcomes[0].retryable) == (0, "InvalidTopic", True)
    assert [o.status for o in outcomes[1:]] == [200, 200, 200, 200]
    assert [p.topic for p in fake.pushes if p.token == "02" * 32] == [""]


def test_a_lost_connection_fails_its_pushes_then_the_next_batch_reconnects(apns):
    from mdm_endpoint.push import ApnsClient

    pki, start = apns
    fake = start()
    port = fake.port
    client = ApnsClient(fake.url, str(pki.push_cert), str(pki.push_key), str(pki.server_ca),
                        timeout=3)
    try:
        assert all(o.delivered for o in client.send(_targets(5, pki.topic)))
        fake.stop()
        down = client.send(_targets(5, pki.topic))
        assert all(o.status == 0 and o.retryable for o in down)
        again = start(port)
        assert all(o.delivered for o in client.send(_targets(5, pki.topic)))
        assert len(again.pushes) == 5
    finally:
        client.close()
