"""A device's message cannot make the MDM endpoint work exponentially (mdm_endpoint.plist_bounds).

plistlib reads a binary plist's shared references once, but hands back a graph: a few hundred
bytes nesting a dictionary referred to twice at each of 40 levels walk as 2**40 nodes (the
command.result event was built from it inside the transaction that locks the host's row). Every
parsed device message is now measured first, linearly, and refused with 400 before any
transaction when it would expand past MAX_PLIST_NODES, MAX_PLIST_DEPTH or
MAX_PLIST_EXPANDED_BYTES; real Apple messages, large ones included, parse as before.

Unit tests of the bounds, then the real endpoint (werkzeug's threaded server on a real socket,
a real connection pool) where the same host's next Idle must be served. Times asserted here are
generous ceilings: benchmarks, not tests, measure speed."""

from __future__ import annotations

import os
import plistlib
import struct
import time
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdm_endpoint.app import create_app
from mdm_endpoint.identity import IdentityVerifier
from mdm_endpoint.plist_bounds import (
    MAX_PLIST_DEPTH,
    MAX_PLIST_EXPANDED_BYTES,
    MAX_PLIST_NODES,
    PlistTooComplex,
    check_plist_bounds,
)
from mdm_endpoint.protocol import ProtocolError, parse_checkin, parse_plist, parse_result
from mdm_endpoint.store import CommandStore
from mdmscep_common import mdm_commands
from mdmscep_common.db import Database
from mdmscep_common.health import HealthChecks
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.identity_pki import IdentityCa
from tests.support.mdm import ServerThread
from tests.support.ports import free_port
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

UDID = "D0D0D0D0-0000-4000-8000-0000000000B1"
COMMAND = "9A1B2C3D-0000-4000-8000-0000000000B2"
CEILING = 2.0  # seconds: far above the milliseconds a refusal takes, far below a hang


def shared_reference_error(levels: int, udid: str = UDID, command_uuid: str = COMMAND) -> bytes:
    """An Error result whose ErrorChain nests one dictionary referred to twice per level:
    plistlib's binary writer stores a container once however often it appears."""
    node: dict = {"ErrorCode": 4001}
    for _ in range(levels):
        node = {"a": node, "b": node}
    return plistlib.dumps({"Status": "Error", "UDID": udid, "CommandUUID": command_uuid,
                           "ErrorChain": [node]}, fmt=plistlib.FMT_BINARY)


def _refused_quickly(body: bytes, parse=parse_result) -> str:
    started = time.perf_counter()
    with pytest.raises(ProtocolError) as refused:
        parse(body)
    assert time.perf_counter() - started < CEILING
    return str(refused.value)


# --- the bodies that took seconds, or forever -------------------------------------------------------

def test_twenty_levels_of_shared_references_are_refused_by_their_node_count():
    body = shared_reference_error(20)
    assert len(body) < 400
    assert "nodes" in _refused_quickly(body)


def test_forty_levels_of_shared_references_are_refused():
    body = shared_reference_error(40)
    assert len(body) < 600
    assert "nested deeper" in _refused_quickly(body)


def test_check_ins_are_bounded_too():
    node: dict = {"x": "y"}
    for _ in range(24):
        node = {"a": node, "b": node}
    body = plistlib.dumps({"MessageType": "Authenticate", "UDID": UDID, "Topic": "t",
                           "Extra": node}, fmt=plistlib.FMT_BINARY)
    _refused_quickly(body, parse_checkin)


def test_wide_sharing_is_counted_as_the_tree_it_expands_to():
    leaves = ["x"] * 1000  # one string object, referred to 1000 times
    rows = [leaves] * 1000  # one array object, referred to 1000 times: 10**6 nodes, 3 levels
    body = plistlib.dumps({"Status": "Idle", "UDID": UDID, "Rows": rows}, fmt=plistlib.FMT_BINARY)
    with pytest.raises(PlistTooComplex, match="nodes"):
        check_plist_bounds(body)


def test_a_shared_blob_counts_every_time_it_appears():
    blob = os.urandom((1 << 20) - 4096)  # leaves room for the message's own strings
    times = MAX_PLIST_EXPANDED_BYTES // len(blob) + 1
    body = plistlib.dumps({"Status": "Idle", "UDID": UDID, "Blobs": [blob] * times},
                          fmt=plistlib.FMT_BINARY)
    assert len(body) < 2 * len(blob)
    with pytest.raises(PlistTooComplex, match="bytes"):
        check_plist_bounds(body)
    fits = plistlib.dumps({"Status": "Idle", "UDID": UDID, "Blobs": [blob] * (times - 1)},
                          fmt=plistlib.FMT_BINARY)
    check_plist_bounds(fits)


# --- depth, the same in both formats ---------------------------------------------------------------

def _nested(depth: int) -> dict:
    """A message `depth` levels deep: the top dictionary, arrays, a string at the bottom."""
    value: object = "bottom"
    for _ in range(depth - 2):
        value = [value]
    return {"Status": "Idle", "UDID": UDID, "Nested": value}


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY], ids=["xml", "binary"])
def test_depth_up_to_the_bound_parses_and_past_it_is_refused(fmt):
    assert parse_result(plistlib.dumps(_nested(MAX_PLIST_DEPTH), fmt=fmt)).status == "Idle"
    assert "nested deeper" in _refused_quickly(plistlib.dumps(_nested(MAX_PLIST_DEPTH + 1),
                                                              fmt=fmt))


def test_a_very_deep_xml_plist_is_refused_before_plistlib():
    body = (b'<?xml version="1.0"?><plist version="1.0"><dict><key>Status</key>'
            b"<string>Idle</string><key>N</key>" + b"<array>" * 50_000 + b"</array>" * 50_000
            + b"</dict></plist>")
    assert "nested deeper" in _refused_quickly(body)


def test_too_many_xml_elements_are_refused():
    body = plistlib.dumps({"Status": "Idle", "UDID": UDID, "Flags": [True] * MAX_PLIST_NODES})
    assert "elements" in _refused_quickly(body)


def test_xml_entity_declarations_are_refused_without_expanding_them():
    laughs = b'<!ENTITY l0 "ha">' + b"".join(
        b'<!ENTITY l%d "&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;">'
        % (i, *([i - 1] * 10)) for i in range(1, 10))
    body = (b'<?xml version="1.0"?><!DOCTYPE plist [' + laughs + b']><plist version="1.0"><dict>'
            + b"<key>Status</key><string>Idle</string><key>UDID</key><string>&l9;</string>"
            + b"</dict></plist>" + b"<!-- padding -->" * 40)
    _refused_quickly(body)
    short = b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaa">]><plist><dict/></plist>'
    _refused_quickly(short)  # under the tag count that needs the extra pass: plistlib refuses


# --- binary structure the writer would never produce ---------------------------------------------

def _bplist(objects: list[bytes], top: int = 0, offset_size: int = 2, ref_size: int = 1,
            table_offset: int | None = None, count: int | None = None,
            declared_offset_size: int | None = None) -> bytes:
    """A binary plist from encoded objects (references in them are one byte); the trailer
    says what it is told to."""
    body, offsets = bytearray(b"bplist00"), []
    for encoded in objects:
        offsets.append(len(body))
        body += encoded
    table = len(body)
    for offset in offsets:
        body += offset.to_bytes(offset_size, "big")
    body += struct.pack(">6xBBQQQ", offset_size if declared_offset_size is None
                        else declared_offset_size, ref_size,
                        len(objects) if count is None else count, top,
                        table if table_offset is None else table_offset)
    return bytes(body)


def test_a_plist_that_contains_itself_is_refused():
    # object 0: a dictionary {"UDID": object 0}; object 1: the key.
    looped_dict = _bplist([b"\xd1\x01\x00", b"\x54UDID"])
    # object 0: {"Status": [object 2]}; object 2: an array holding itself.
    looped_array = _bplist([b"\xd1\x01\x02", b"\x56Status", b"\xa1\x02"])
    for body in (looped_dict, looped_array):
        with pytest.raises(PlistTooComplex, match="refers to itself"):
            check_plist_bounds(body)
        _refused_quickly(body, parse_plist)


@pytest.mark.parametrize("body", [
    pytest.param(b"bplist00" + b"\x00" * 10, id="shorter than a trailer"),
    pytest.param(_bplist([b"\xd0"], declared_offset_size=0), id="zero-byte offsets"),
    pytest.param(_bplist([b"\xd0"], ref_size=9), id="nine-byte references"),
    pytest.param(_bplist([b"\xd0"], top=5), id="top object past the table"),
    pytest.param(_bplist([b"\xd0"], count=1 << 40), id="more objects than bytes"),
    pytest.param(_bplist([b"\xd0"], table_offset=1 << 50), id="table outside the body"),
    pytest.param(_bplist([b"\xa1\x07"]), id="reference to a missing object"),
    pytest.param(_bplist([b"\xaf\x13\xff\xff\xff\xff"]), id="array longer than the body"),
    pytest.param(_bplist([b"\x4f\x13\xff\xff\xff\xff"]), id="data longer than the body"),
    pytest.param(_bplist([b"\xaf\x13"]), id="length cut off"),
])
def test_unreadable_binary_structure_is_a_protocol_error(body):
    _refused_quickly(body, parse_plist)


@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                      max_size=4))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_binary_plists_are_parsed_or_refused_never_anything_else(flips):
    body = bytearray(plistlib.dumps({
        "Status": "Acknowledged", "UDID": UDID, "CommandUUID": COMMAND,
        "CertificateList": [{"CommonName": "c", "Data": b"\x30" * 40, "IsIdentity": True}] * 3},
        fmt=plistlib.FMT_BINARY))
    for position, value in flips:
        body[position % len(body)] = value
    try:
        check_plist_bounds(bytes(body))
    except PlistTooComplex:
        pass
    try:
        parse_result(bytes(body))
    except ProtocolError:
        pass


_plist_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
_plist_values = st.recursive(
    _plist_text | st.binary(max_size=40)
    | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.booleans() | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(_plist_text, children,
                                                                      max_size=6),
    max_leaves=60)


@given(value=_plist_values, binary=st.booleans())
@settings(max_examples=300, deadline=None)
def test_plists_within_the_bounds_parse_as_plistlib_parses_them(value, binary):
    body = plistlib.dumps({"Status": "Idle", "UDID": UDID, "Value": value},
                          fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)
    assert parse_plist(body) == plistlib.loads(body)


# --- what real devices send ----------------------------------------------------------------------

def _profile(index: int) -> dict:
    return {
        "PayloadIdentifier": f"com.example.profile.{index}", "PayloadUUID": str(uuid.uuid4()),
        "PayloadDisplayName": f"Profile {index}", "PayloadOrganization": "Example Corp",
        "PayloadVersion": 1, "PayloadRemovalDisallowed": False, "IsEncrypted": False,
        "HasRemovalPasscode": False, "IsManaged": True,
        "SignerCertificates": [os.urandom(1400)],
        "PayloadContent": [{"PayloadIdentifier": f"com.example.profile.{index}.{n}",
                            "PayloadType": "com.apple.security.scep", "PayloadVersion": 1,
                            "PayloadUUID": str(uuid.uuid4()),
                            "PayloadDisplayName": f"Payload {n}"} for n in range(10)]}


def _certificate(index: int, data: bytes) -> dict:
    return {"CommonName": f"Certificate {index}", "Data": data, "IsIdentity": index % 7 == 0}


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY], ids=["xml", "binary"])
def test_a_busy_macs_profile_list_parses(fmt):
    profiles = [_profile(i) for i in range(400)]
    body = plistlib.dumps({"Status": "Acknowledged", "UDID": UDID, "CommandUUID": COMMAND,
                           "ProfileList": profiles}, fmt=fmt)
    event = parse_result(body).event("ProfileList")
    assert [p["identifier"] for p in event["profile_list"]] == \
        [p["PayloadIdentifier"] for p in profiles]


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY], ids=["xml", "binary"])
def test_a_busy_macs_certificate_list_parses(fmt):
    # Keychains list the same certificate more than once: the binary writer stores it once.
    distinct = [os.urandom(1800) for _ in range(300)]
    certificates = [_certificate(i, distinct[i % len(distinct)]) for i in range(900)]
    body = plistlib.dumps({"Status": "Acknowledged", "UDID": UDID, "CommandUUID": COMMAND,
                           "CertificateList": certificates}, fmt=fmt)
    assert len(body) < 8 << 20  # within the endpoint's body limit (mdm_endpoint.app)
    event = parse_result(body).event("CertificateList")
    assert len(event["certificate_list"]) == 900


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY], ids=["xml", "binary"])
def test_a_large_installed_application_list_parses(fmt):
    apps = [{"Identifier": f"com.example.app{i}", "Name": f"App {i}", "ShortVersion": "1.0",
             "Version": "100", "BundleSize": 123456, "DynamicSize": 4096, "IsValidated": True,
             "ExternalVersionIdentifier": i, "HasUpdateAvailable": False, "Installing": False}
            for i in range(3000)]
    body = plistlib.dumps({"Status": "Acknowledged", "UDID": UDID, "CommandUUID": COMMAND,
                           "InstalledApplicationList": apps}, fmt=fmt)
    assert parse_plist(body)["InstalledApplicationList"] == apps


def test_the_event_is_json_whatever_types_the_device_sent():
    """A result's event is published as JSON after the commit; a value JSON cannot carry would
    be retried forever by the service's EventRelay, holding every later event behind it."""
    import datetime
    import json

    odd = [b"data", {"nested": b"x"}, 7, datetime.datetime(2026, 1, 1), ["list"]]
    body = plistlib.dumps({
        "Status": "Acknowledged", "UDID": UDID, "CommandUUID": COMMAND,
        "ProfileList": [{"PayloadIdentifier": v, "PayloadUUID": v, "PayloadDisplayName": v}
                        for v in odd],
        "CertificateList": [{"CommonName": v, "Data": v, "IsIdentity": v} for v in odd],
        "ErrorChain": [{"ErrorCode": v, "LocalizedDescription": v} for v in odd]},
        fmt=plistlib.FMT_BINARY)
    event = parse_result(body).event("ProfileList")
    assert json.loads(json.dumps(event)) == event
    assert {p["identifier"] for p in event["profile_list"]} == {""}


def test_the_golden_messages_parse():
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "mdm_endpoint" / "testdata" / "mdm"
    for name in ("Authenticate", "TokenUpdate"):
        parse_checkin((data / f"{name}.plist").read_bytes())
    for name in ("Error", "ProfileList"):
        body = (data / f"{name}.plist").read_bytes()
        parse_result(body)
        parse_result(plistlib.dumps(plistlib.loads(body), fmt=plistlib.FMT_BINARY))


# --- through the real endpoint ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(database_url):
    db = Database(database_url, max_size=4, name="tests-plist-bounds").open()
    yield db
    db.close()


@pytest.fixture
def endpoint(pool):
    """mdm-endpoint on a real port over a real connection pool, with one enrolled host that
    has been handed an InstallProfile command (its result is what the bodies answer)."""
    db = pool
    ca = IdentityCa("plist bounds identity CA")
    host = ca.issue("bounded host")
    publisher = RecordingPublisher()
    app = create_app(load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY}), db, publisher,
                     HealthChecks({}), verifier=IdentityVerifier([ca.certificate]))
    server = ServerThread(app, free_port()).start()
    client = httpx.Client(base_url=server.url, timeout=10)

    def send(path: str, body: bytes) -> httpx.Response:
        return client.put(path, content=body, headers={"Mdm-Signature": host.sign(body)})

    assert send("/mdm/checkin", plistlib.dumps({"MessageType": "Authenticate", "UDID": UDID,
                                                "Topic": "t"})).status_code == 200
    assert send("/mdm/checkin", plistlib.dumps({
        "MessageType": "TokenUpdate", "UDID": UDID, "Topic": "t", "Token": b"\x01" * 32,
        "PushMagic": "magic"})).status_code == 200
    # Enrolled, it is asked its facts first; it answers, as a device does.
    asked = plistlib.loads(send("/mdm/connect", plistlib.dumps({"Status": "Idle",
                                                                 "UDID": UDID})).content)
    assert send("/mdm/connect", plistlib.dumps({
        "Status": "Acknowledged", "UDID": UDID, "CommandUUID": asked["CommandUUID"],
        "QueryResponses": {"ProductName": "Mac15,3"}})).content == b""
    with db.transaction() as conn:
        CommandStore().enqueue(conn, [(UDID, COMMAND, "InstallProfile",
                                       mdm_commands.install_profile(COMMAND, b"<profile/>"))], [])
    handed = send("/mdm/connect", plistlib.dumps({"Status": "Idle", "UDID": UDID}))
    assert handed.status_code == 200 and COMMAND.encode() in handed.content
    publisher.messages.clear()  # host.enrolled
    yield send, db, publisher
    client.close()
    server.stop()
    with db.transaction() as conn:
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute("DELETE FROM commands WHERE host_uuid = %s", (UDID,))
        conn.execute("DELETE FROM hosts WHERE uuid = %s", (UDID,))


def _command_state(db):
    with db.transaction() as conn:
        return conn.execute("SELECT status, result FROM commands WHERE command_uuid = %s",
                            (COMMAND,)).fetchone()


@pytest.mark.parametrize("levels", [20, 40])
def test_the_endpoint_refuses_shared_references_and_serves_the_hosts_next_idle(endpoint, levels):
    send, db, publisher = endpoint
    before = _command_state(db)
    started = time.perf_counter()
    refused = send("/mdm/connect", shared_reference_error(levels))
    assert refused.status_code == 400
    assert time.perf_counter() - started < CEILING
    assert _command_state(db) == before and publisher.messages == []

    # The host's row is not held: its next Idle is answered, and a real Error result is taken.
    started = time.perf_counter()
    assert send("/mdm/connect", plistlib.dumps({"Status": "Idle", "UDID": UDID})).status_code \
        == 200
    assert time.perf_counter() - started < CEILING
    error = plistlib.dumps({"Status": "Error", "UDID": UDID, "CommandUUID": COMMAND,
                            "ErrorChain": [{"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain",
                                            "LocalizedDescription": "The profile is invalid."}]})
    assert send("/mdm/connect", error).status_code == 200
    [(routing_key, event)] = publisher.messages
    assert routing_key == "command.result"
    assert event["error_chain"][0]["ErrorCode"] == 4001


# Found by test_mdm_fuzz: an XML declaration naming an encoding expat does not know made the
# bounds check raise LookupError, an unhandled 500.
@pytest.mark.parametrize("encoding", ["ATF-8", "x-unknown", "utf-99"])
def test_an_unknown_xml_encoding_is_a_protocol_error(encoding):
    body = (f'<?xml version="1.0" encoding="{encoding}"?>'
            '<plist version="1.0"><dict><key>MessageType</key><string>Idle</string></dict></plist>'
            ).encode()
    with pytest.raises(ProtocolError):
        parse_plist(body)
