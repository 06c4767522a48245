"""Profile delivery end to end without the SCEP proxy: admin API → processor → Commander → push →
simulated hosts, with real PostgreSQL, RabbitMQ and hosts enrolled at a real identity scepserver.
The hosts enroll their SCEP certificates straight at the real CA (the proxy is covered by its own
tests and the e2e suite), so verification sees real certificates in CertificateList."""

from __future__ import annotations

import plistlib
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography import x509

from mdmscep_common import fleet_vars
from tests.admin_config.test_configuration_profiles import upload
from tests.support.scepserver import start_scepserver
from tests.support.service_fixtures import PROXY_PUBLIC_URL, create_ca
from tests.support.waiting import wait_for

SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
SPECIAL_CHALLENGE = "a&b<c>\"d'"


def statuses(admin, host):
    return {p["profile_uuid"]: p for p in
            admin.get(f"/api/v1/fleet/hosts/{host.udid}/configuration_profiles").json["profiles"]}


def wait_status(admin, host, profile_uuid, status, timeout=30.0):
    return wait_for(lambda: (statuses(admin, host).get(profile_uuid, {}).get("status") == status
                             and statuses(admin, host)[profile_uuid]), timeout,
                    f"{host.udid} {status}: {statuses(admin, host)}")


def installs(host):
    return [c for c in host.received if c["Command"]["RequestType"] == "InstallProfile"]


def scep_content(payload: bytes) -> dict:
    return plistlib.loads(payload)["PayloadContent"][0]["PayloadContent"]


@pytest.fixture(scope="module")
def special_ca(tmp_path_factory):
    """A real scepserver whose challenge has XML special characters."""
    server = start_scepserver(challenge=SPECIAL_CHALLENGE, workdir=tmp_path_factory.mktemp("ca"))
    yield server
    server.stop()


@pytest.fixture
def new_hosts(mdm, special_ca):
    def make(count, **kw):
        hosts = [mdm.new_host(**kw) for _ in range(count)]
        for host in hosts:
            host.scep_url_override = special_ca.url  # straight to the CA: no proxy here
        return hosts
    return make


@pytest.fixture
def scep_ca(live_admin, special_ca):
    response = create_ca(live_admin, "Test_SCEP", special_ca.url, SPECIAL_CHALLENGE)
    assert response.status_code == 200
    return response.json["id"]


def test_seed_profile_reaches_enrolled_and_later_hosts_each_with_its_own_copy(
        mdm, new_hosts, live_admin, scep_ca, start_processor):
    start_processor()
    early = new_hosts(2)
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    late = new_hosts(1)  # enrolls after the upload
    codes = set()
    for host in early + late:
        wait_status(live_admin, host, profile_uuid, "verified")
        # The last attempt is the one acknowledged (this scepserver may refuse one of two
        # concurrent requests: the host then reports the error and gets a new attempt).
        *_, command = installs(host)
        assert len(installs(host)) <= 3
        payload = command["Command"]["Payload"]
        content = scep_content(payload)
        assert content["Challenge"] == SPECIAL_CHALLENGE  # exact after plist parsing
        url = content["URL"]
        prefix = f"{PROXY_PUBLIC_URL}/mdm/scep/proxy/"
        assert url.startswith(prefix) and "%2C" in url
        host_uuid, p_uuid, ca_name, code = unquote(url[len(prefix):]).split(",")
        assert (host_uuid, p_uuid, ca_name) == (host.udid, profile_uuid, "Test_SCEP")
        codes.add(code)
        # Byte for byte apart from the two variables (XML-escaped where they were).
        expected = SEED.replace(b"$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_Test_SCEP",
                                fleet_vars.xml_escape(SPECIAL_CHALLENGE).encode()) \
                       .replace(b"${FLEET_VAR_CUSTOM_SCEP_PROXY_URL_Test_SCEP}",
                                fleet_vars.xml_escape(url).encode())
        assert payload == expected
        assert b"%SerialNumber% WIFI" in payload  # device variables are left for the device
    assert len(codes) == 3


def test_device_errors_fail_after_three_attempts_with_the_error_text(mdm, new_hosts, live_admin, scep_ca,
                                                                      start_processor):
    start_processor()
    [host] = new_hosts(1)
    host.install_error = "Profile installation failed: the disk is full"
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    row = wait_status(live_admin, host, profile_uuid, "failed")
    assert "the disk is full" in row["detail"]
    attempts = installs(host)
    assert len(attempts) == 3
    urls = {scep_content(c["Command"]["Payload"])["URL"] for c in attempts}
    assert len(urls) == 3  # a new one-time code for every attempt


def test_an_expired_code_is_replaced_by_a_fresh_command(mdm, new_hosts, mdm_db, live_admin, scep_ca,
                                                         start_processor):
    start_processor(SCEP_CODE_TTL="2")
    [host] = new_hosts(1)
    mdm.fleet._by_token.pop(host.push_token.hex())  # asleep: ignores pushes
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]

    def commands():
        with mdm_db.transaction() as conn:
            return conn.execute("SELECT command_uuid, status FROM commands WHERE host_uuid = %s "
                                "AND request_type = 'InstallProfile' ORDER BY seq",
                                (host.udid,)).fetchall()
    wait_for(lambda: len(commands()) >= 2, what="a second InstallProfile", timeout=20)
    first, second = commands()[:2]
    assert first["status"] == "replaced"
    host.poll()  # wakes up: gets only the fresh command
    [command] = installs(host)
    assert command["CommandUUID"] != first["command_uuid"]
    wait_for(lambda: statuses(live_admin, host)[profile_uuid]["status"] in ("verifying", "verified"),
             what="acknowledged")


def test_editing_the_ca_resends_with_the_new_challenge(mdm, new_hosts, live_admin, scep_ca,
                                                       start_processor, tmp_path):
    start_processor()
    [host] = new_hosts(1)
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    wait_status(live_admin, host, profile_uuid, "verified")
    # The admin moves to a new CA with another challenge: every host gets a fresh copy.
    moved = start_scepserver(challenge="rotated-challenge", workdir=tmp_path / "new-ca")
    try:
        host.scep_url_override = moved.url
        response = live_admin.patch(f"/api/v1/fleet/certificate_authorities/{scep_ca}",
                                    json={"custom_scep_proxy": {"url": moved.url,
                                                                "challenge": "rotated-challenge"}})
        assert response.status_code == 200
        wait_for(lambda: len(installs(host)) == 2, what="re-send after CA edit")
        assert scep_content(installs(host)[-1]["Command"]["Payload"])["Challenge"] == \
            "rotated-challenge"
        wait_status(live_admin, host, profile_uuid, "verified")
        [cert] = host.profiles["Fleet.custom.SCEP"].certificates
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(moved.ca_pem))
    finally:
        moved.stop()


def test_deleting_a_profile_sends_remove_profile(mdm, new_hosts, live_admin, scep_ca, start_processor):
    start_processor()
    [host] = new_hosts(1)
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    wait_status(live_admin, host, profile_uuid, "verified")
    assert "Fleet.custom.SCEP" in host.profiles
    assert live_admin.delete(f"/api/v1/fleet/configuration_profiles/{profile_uuid}").status_code == 204
    wait_for(lambda: profile_uuid not in statuses(live_admin, host), what="removal")
    removes = [c for c in host.received if c["Command"]["RequestType"] == "RemoveProfile"]
    assert [c["Command"]["Identifier"] for c in removes] == ["Fleet.custom.SCEP"]
    assert "Fleet.custom.SCEP" not in host.profiles


def test_missing_from_profile_list_is_resent(mdm, new_hosts, live_admin, scep_ca, start_processor):
    start_processor(PROFILE_VERIFY_INTERVAL="1")
    [host] = new_hosts(1)
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    wait_status(live_admin, host, profile_uuid, "verified")
    host.profiles.clear()  # the user removed it by hand
    wait_for(lambda: len(installs(host)) == 2, what="re-send of a missing profile")
    wait_status(live_admin, host, profile_uuid, "verified")


def test_check_out_drops_the_hosts_rows(mdm, new_hosts, mdm_db, live_admin, scep_ca, start_processor):
    start_processor()
    [host] = new_hosts(1)
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    wait_status(live_admin, host, profile_uuid, "verified")
    host.check_out()

    def rows():
        with mdm_db.transaction() as conn:
            return conn.execute("SELECT count(*) AS n FROM host_profiles WHERE host_uuid = %s",
                                (host.udid,)).fetchone()["n"]
    wait_for(lambda: rows() == 0, what="rows dropped")


def test_two_replicas_send_exactly_one_install_per_host(mdm, new_hosts, mdm_db, live_admin, scep_ca,
                                                         start_processor):
    hosts = new_hosts(6)
    for host in hosts:
        mdm.fleet._by_token.pop(host.push_token.hex())  # keep deliveries pending
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    start_processor()
    start_processor()

    def pending():
        with mdm_db.transaction() as conn:
            return conn.execute("SELECT count(*) AS n FROM host_profiles WHERE profile_uuid = %s "
                                "AND command_uuid IS NOT NULL", (profile_uuid,)).fetchone()["n"]
    wait_for(lambda: pending() == len(hosts), what="all sent")
    time.sleep(1.0)  # both replicas keep reconciling (a pass every 0.25 s each)
    with mdm_db.transaction() as conn:
        counts = conn.execute("SELECT host_uuid, count(*) AS n FROM commands "
                              "WHERE request_type = 'InstallProfile' GROUP BY host_uuid").fetchall()
    assert sorted(r["n"] for r in counts) == [1] * len(hosts)
