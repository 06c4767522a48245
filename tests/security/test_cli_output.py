"""The admin CLI never lets a terminal control character reach the admin's terminal.

A host names its own serial number and device name at check-in, and a profile's name is
whatever its PayloadDisplayName says: both reach `mdmscep` tables, `host show` and errors. Here
a host checks in (signed, as a binary plist, through the real mdm-endpoint app) with ESC
sequences, BEL, backspace and carriage return in those fields, and a profile with C1 controls,
a carriage return and bidi overrides in its name is uploaded through the CLI; the CLI runs
against the real admin API on a port, on the real tables in a transaction rolled back after
the test. Text output shows such characters as visible escapes; --json escapes them (\\u001b)
and parses back to the very same strings.

And the other way: an argument the CLI puts in a URL path (a host UUID, which the host chose)
stays one path segment, so `host delete ../configuration_profiles/<uuid>` cannot delete a
profile."""

from __future__ import annotations

import json
import plistlib
import unicodedata

import pytest

from admin_config.app import build_services, create_app
from admin_config.cli import main
from admin_config.terminal import UNSAFE_CATEGORIES
from mdm_endpoint.app import create_app as create_mdm_app
from mdm_endpoint.identity import IdentityVerifier
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber
from tests.support.identity_pki import IdentityCa
from tests.support.mdm import ServerThread
from tests.support.owner_doubles import row_owners
from tests.support.ports import free_port
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

UDID = "C11C11C1-0000-4000-8000-0000000000C1"
# ESC colour and OSC window-title sequences, BEL, backspace, carriage return, a bidi override.
SERIAL = "\x1b[31mC02\x07\x08\x08\rFAKE\x1b]0;owned\x07\u202eXYZ"
DEVICE_NAME = "Mac\x9b2J\u2066iso\u2069\x7f\u200b"  # 8-bit CSI, isolates, DEL, zero width
# C1 controls (CSI, NEL), a carriage return (as &#13;: XML keeps it), bidi overrides.
PROFILE_NAME = "Wi-Fi\x9b1A\x85\rRoot CA\u202egnp.exe\u202c"
PROFILE_IDENTIFIER = "com.example.cli-output"


def _unsafe(text: str) -> list[str]:
    return [hex(ord(ch)) for ch in text
            if ch != "\n" and unicodedata.category(ch) in UNSAFE_CATEGORIES]


@pytest.fixture
def cli(db, capsys):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    app = create_app(build_services(settings, db, NoProber(), RecordingPublisher(),
                                    **row_owners(db)), HealthChecks({}))
    server = ServerThread(app, free_port()).start()

    def run(*args):
        try:
            main(["--server", server.url, "--token", ADMIN_TOKEN, *args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        # What reaches the terminal: stdout, stderr, and the message sys.exit prints.
        return code, out.out + out.err + (code if isinstance(code, str) else "")
    yield run
    server.stop()


@pytest.fixture
def hostile_host(db):
    """A host whose check-in carries terminal control characters, as mdm-endpoint stores it."""
    ca = IdentityCa()
    identity = ca.issue("hostile host")
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY})
    mdm = create_mdm_app(settings, db, RecordingPublisher(), HealthChecks({}),
                         verifier=IdentityVerifier([ca.certificate])).test_client()
    body = plistlib.dumps({"MessageType": "Authenticate", "UDID": UDID, "Topic": "t",
                           "SerialNumber": SERIAL, "DeviceName": DEVICE_NAME},
                          fmt=plistlib.FMT_BINARY)
    response = mdm.put("/mdm/checkin", data=body, headers={"Mdm-Signature": identity.sign(body)})
    assert response.status_code == 200
    return UDID


@pytest.fixture
def hostile_profile(tmp_path):
    xml = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1,
        "PayloadIdentifier": PROFILE_IDENTIFIER, "PayloadUUID": "5E1F0000-0000-4000-8000-0000000000AA",
        "PayloadDisplayName": PROFILE_NAME.replace("\r", "CR-HERE"), "PayloadContent": []})
    path = tmp_path / "hostile.mobileconfig"
    path.write_bytes(xml.replace(b"CR-HERE", b"&#13;"))
    return path


def test_text_output_escapes_control_characters(cli, hostile_host, hostile_profile):
    code, out = cli("profile", "upload", str(hostile_profile))
    assert code == 0, out
    for args in (("profile", "list"), ("host", "list"), ("host", "show", hostile_host),
                 ("activity", "list")):
        code, out = cli(*args)
        assert code == 0, (args, out)
        assert not _unsafe(out), (args, _unsafe(out), out)
    _, hosts = cli("host", "list")
    assert "\\x1b[31mC02\\x07\\x08\\x08\\x0dFAKE\\x1b]0;owned\\x07\\u202eXYZ" in hosts
    # Nothing the host sent can start a line of its own: one header line, one host line.
    assert len(hosts.splitlines()) == 2
    _, shown = cli("host", "show", hostile_host)
    assert "device_name: Mac\\x9b2J\\u2066iso\\u2069\\x7f\\u200b" in shown
    _, profiles = cli("profile", "list")
    assert "Wi-Fi\\x9b1A\\x85\\x0dRoot CA\\u202egnp.exe\\u202c" in profiles


def test_errors_escape_control_characters(cli):
    code, out = cli("host", "certificates", "no-such-host\x1b]0;owned\x07\x1b[2J")
    assert isinstance(code, str) and "404" in code
    assert not _unsafe(out), _unsafe(out)
    assert "no-such-host\\x1b]0;owned\\x07\\x1b[2J" in out


def test_json_output_escapes_control_characters(cli, hostile_host, hostile_profile):
    assert cli("profile", "upload", str(hostile_profile))[0] == 0
    outputs = {args: cli("--json", *args) for args in
               (("profile", "list"), ("host", "list"), ("host", "show", hostile_host),
                ("activity", "list"))}
    for args, (code, out) in outputs.items():
        assert code == 0, (args, out)
        # Printable ASCII and line feeds only: every other character is a JSON escape.
        assert all(ch == "\n" or " " <= ch <= "~" for ch in out), (args, _unsafe(out))
    assert "\\u001b[31mC02\\u0007\\b\\b\\rFAKE\\u001b]0;owned\\u0007\\u202eXYZ" in \
        outputs[("host", "list")][1]
    # Scripts still get the exact strings.
    assert json.loads(outputs[("host", "show", hostile_host)][1])["serial_number"] == SERIAL
    assert json.loads(outputs[("host", "show", hostile_host)][1])["device_name"] == DEVICE_NAME
    profiles = json.loads(outputs[("profile", "list")][1])["profiles"]
    assert [p["name"] for p in profiles] == [PROFILE_NAME]


def test_a_path_argument_cannot_reach_another_route(cli, hostile_profile, db_conn):
    code, out = cli("--json", "profile", "upload", str(hostile_profile))
    assert code == 0, out
    profile_uuid = json.loads(out)["profile_uuid"]
    code, out = cli("host", "delete", f"../configuration_profiles/{profile_uuid}")
    assert isinstance(code, str) and "404" in code
    assert db_conn.execute("SELECT count(*) AS n FROM profiles WHERE uuid = %s",
                           (profile_uuid,)).fetchone()["n"] == 1
    code, out = cli("host", "show", "..")
    assert isinstance(code, str) and "404" in code
