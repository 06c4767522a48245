"""A copy of the database yields no CA challenge and no usable one-time code.

A real delivery (admin API → processor rendering the seed SCEP profile → Commander → a simulated
host, checking in, that installs it and enrolls at a real scepserver), plus a host whose SCEP
request cannot reach the proxy and whose errors quote the proxy URL it tried, code included
(what scepclient and macOS say). Then `pg_dump` of the whole database is searched for the
challenge (as written and XML-escaped, as a rendered profile has it) and for every one-time code
handed out (alone and in its URL-escaped proxy-URL form). And the queue's older rows: commands
stored in clear before payloads were sealed still work; one sealed under a lost key is reported.

A plain grep of a dump is blind to most of what matters: bytea columns come out as hex, and a
command plist carries the profile as base64 <data>. So the search decodes: every hex value in the
dump and every base64 run inside what it decoded, a few levels deep; a control checks that it does
find the secrets in a command as it was stored in clear before.
"""

from __future__ import annotations

import base64
import glob
import plistlib
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from mdm_endpoint.command_payloads import UNREADABLE_TEXT, seal_payload
from mdmscep_common import fleet_vars, mdm_commands
from mdmscep_common.crypto import SecretBox
from mdmscep_common.migrate import migrations_dir
from tests.admin_config.test_configuration_profiles import upload
from tests.profile_processor.test_profile_delivery import SEED, installs, scep_content, statuses
from tests.support.bus_listener import BusListener
from tests.support.polled_mdm import (  # noqa: F401 - fixtures this module uses
    apns_pki,
    clean_hosts,
    clean_state,
    commander,
    fake_apns,
    identity_ca,
    live_admin,
    live_admin_app,
    mdm,
    mdm_db,
    mdm_relay,
    mdm_server,
    mdm_settings,
    processor_relay,
    push_router,
    start_processor,
)
from tests.support.scepserver import start_scepserver
from tests.support.service_fixtures import PROXY_PUBLIC_URL, create_ca
from tests.support.waiting import wait_for

CHALLENGE = "dump&<challenge>\"only-the-CA-knows'"
MIGRATION_0009 = Path(migrations_dir()) / "0009_secrets_at_rest.sql"
CA_NAME = "Test_SCEP"  # the seed profile's variables name it
PROXY_PREFIX = f"{PROXY_PUBLIC_URL}/mdm/scep/proxy/"

_HEX = re.compile(rb"\\x((?:[0-9a-f]{2}){8,})")  # bytea in pg_dump's COPY text: \\x…
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4}[\t\n\r ]*){6,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def decoded_layers(blob: bytes, depth: int = 4) -> list[bytes]:
    """`blob` and what is encoded inside it: hex bytea values, and base64 runs (a plist's <data>,
    a JSON field), recursively."""
    layers, todo = [], [(blob, 0)]
    while todo:
        data, level = todo.pop()
        layers.append(data)
        if level == depth:
            continue
        for match in _HEX.finditer(data):
            todo.append((bytes.fromhex(match.group(1).decode("ascii")), level + 1))
        for match in _BASE64.finditer(data):
            compact = re.sub(rb"\s", b"", match.group(0))
            try:
                todo.append((base64.b64decode(compact + b"=" * (-len(compact) % 4)), level + 1))
            except ValueError:
                continue
    return layers


def found_in(dump: bytes, needles: dict[str, str]) -> list[str]:
    """Which needles occur in the dump or anything decoded from it."""
    layers = decoded_layers(dump)
    return sorted(name for name, needle in needles.items()
                  if any(needle.encode("utf-8") in layer for layer in layers))


def pg_dump(database_url: str) -> bytes:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"),
                      key=lambda p: int(Path(p).parts[-3]))
    assert binaries, "pg_dump not found under /usr/lib/postgresql/*/bin"
    done = subprocess.run([binaries[-1], "--no-owner", "--data-only", database_url],
                          capture_output=True, timeout=120, check=True)
    return done.stdout


def codes_of(host) -> list[tuple[str, str]]:
    """(one-time code, URL-escaped proxy id) of every InstallProfile the host received."""
    found = []
    for command in installs(host):
        url = scep_content(command["Command"]["Payload"])["URL"]
        assert url.startswith(PROXY_PREFIX)
        escaped_id = url[len(PROXY_PREFIX):]
        found.append((unquote(escaped_id).split(",")[3], escaped_id))
    return found


def poll_until(admin, host, profile_uuid: str, status: str) -> dict:
    """The host checks in (as a device does on its own) until its delivery has `status`: no push
    worker here (tests/support/polled_mdm.py)."""
    def reached():
        host.poll()
        row = statuses(admin, host).get(profile_uuid, {})
        return row if row.get("status") == status else None
    return wait_for(reached, 60, f"{host.udid} {status}: {statuses(admin, host)}", interval=0.2)


@pytest.fixture(scope="module")
def dump_ca(tmp_path_factory):
    server = start_scepserver(challenge=CHALLENGE, workdir=tmp_path_factory.mktemp("dump-ca"))
    yield server
    server.stop()


def test_a_database_dump_holds_no_challenge_and_no_one_time_code(  # noqa: F811 - fixtures
        mdm, live_admin, start_processor, dump_ca, mdm_settings):  # noqa: F811
    start_processor()
    assert create_ca(live_admin, CA_NAME, dump_ca.url, CHALLENGE).status_code == 200
    installed = mdm.new_host()
    installed.scep_url_override = dump_ca.url  # straight to the CA: its code stays live, unused
    unreachable = mdm.new_host()  # its proxy URL does not resolve: scepclient's error quotes it
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]

    # The host receives and installs the profile, with its certificate from the CA.
    poll_until(live_admin, installed, profile_uuid, "verified")
    [install] = installs(installed)
    assert scep_content(install["Command"]["Payload"])["Challenge"] == CHALLENGE
    identifier = plistlib.loads(install["Command"]["Payload"])["PayloadIdentifier"]
    assert installed.profiles[identifier].certificates
    failed = poll_until(live_admin, unreachable, profile_uuid, "failed")
    assert "/mdm/scep/proxy/" in failed["detail"]  # the host's words are kept, code masked

    needles = {"challenge as written": CHALLENGE,
               "challenge XML-escaped": fleet_vars.xml_escape(CHALLENGE)}
    for host, label in ((installed, "live code"), (unreachable, "code quoted in an error")):
        for n, (code, escaped_id) in enumerate(codes_of(host)):
            needles[f"{label} #{n}"] = code
            needles[f"{label} #{n} in its proxy URL"] = escaped_id
    assert len(needles) == 2 + 2 * (1 + 3)

    dump = pg_dump(mdm_settings.database_url)
    assert b"COPY mdm_endpoint.commands" in dump and installed.udid.encode() in dump
    assert found_in(dump, needles) == []

    # Control: the same search finds them in a command stored as it was before (in clear).
    clear_row = (b"COPY mdm_endpoint.commands (payload) FROM stdin;\n\\\\x"
                 + mdm_commands.install_profile(install["CommandUUID"],
                                                install["Command"]["Payload"]).hex().encode()
                 + b"\n\\.\n")
    assert found_in(clear_row, needles) == sorted(
        ["challenge XML-escaped", "live code #0", "live code #0 in its proxy URL"])


def test_queued_commands_stored_before_or_under_a_lost_key_neither_leak_nor_stall(  # noqa: F811
        mdm, mdm_db, amqp_url):  # noqa: F811 - fixtures
    """A command an older version queued in clear is served as it was. One sealed under a key
    that is no longer configured (a rotation without rotate-key, a restored backup) is not handed
    to the host as ciphertext and does not stall its queue: it ends as an error whose result is
    published, so the processor sends what it carried again."""
    host = mdm.new_host()
    legacy, lost, behind = (mdm_commands.new_command_uuid() for _ in range(3))
    stranger = SecretBox("a-key-this-deployment-never-had-0123456789")
    with mdm_db.transaction() as conn:
        for command_uuid, request_type, payload in (
                (legacy, "ProfileList", mdm_commands.profile_list(legacy)),
                (lost, "InstallProfile", seal_payload(stranger, host.udid, lost,
                                                      mdm_commands.install_profile(lost, b"x")))):
            conn.execute("INSERT INTO commands (host_uuid, command_uuid, request_type, payload) "
                         "VALUES (%s, %s, %s, %s)", (host.udid, command_uuid, request_type, payload))
    mdm.enqueue([(host.udid, behind, "ProfileList", mdm_commands.profile_list(behind))])
    results = BusListener(amqp_url, ["command.result"])
    try:
        served = host.connect({"Status": "Idle"})
        assert served == mdm_commands.profile_list(legacy)
        answer = host.connect({"Status": "Acknowledged", "CommandUUID": legacy, "ProfileList": []})
        assert plistlib.loads(answer)["CommandUUID"] == behind
        [(_, event)] = results.wait_for(lambda key, body: body["command_uuid"] == lost)
    finally:
        results.close()
    assert (event["host_uuid"], event["request_type"], event["status"]) == \
        (host.udid, "InstallProfile", "Error")
    assert event["error_chain"][0]["USEnglishDescription"] == UNREADABLE_TEXT
    with mdm_db.transaction() as conn:
        row = conn.execute("SELECT status, completed_at FROM commands WHERE command_uuid = %s",
                           (lost,)).fetchone()
    assert row["status"] == "error" and row["completed_at"] is not None


def test_migration_0009_masks_the_codes_delivery_details_already_hold(db_conn):
    """Details stored before hosts' quoted codes were masked: the migration masks them in place
    (run here again, inside a transaction that is rolled back)."""
    quoted = ('Attempt 1 of 3 failed, retrying: Get "http://proxy.test/mdm/scep/proxy/'
              'H-1%2CP-1%2CTest_SCEP%2CsEcReT-c0de_123?operation=GetCACert": connection refused; '
              'also /mdm/scep/proxy/H,P,C,xyz9')
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, detail) "
                    "VALUES ('H-1', 'P-1', 'x', %s), ('H-2', 'P-1', 'x', 'Missing from the list')",
                    (quoted,))
    db_conn.execute(MIGRATION_0009.read_text())
    details = {r["host_uuid"]: r["detail"] for r in db_conn.execute(
        "SELECT host_uuid, detail FROM host_profiles WHERE host_uuid IN ('H-1', 'H-2')")}
    assert details == {
        "H-1": ('Attempt 1 of 3 failed, retrying: Get "http://proxy.test/mdm/scep/proxy/'
                'H-1%2CP-1%2CTest_SCEP%2C********?operation=GetCACert": connection refused; '
                'also /mdm/scep/proxy/H,P,C,********'),
        "H-2": "Missing from the list"}
