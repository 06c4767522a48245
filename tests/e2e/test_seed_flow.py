"""The seed's two diagrams end to end, every arrow, with real parts: the stack started by the
`make run` launcher, real scepservers (the admin's custom CA and the identity CA), an HTTP/2
fake APNs, and simulated Macs that run the real scepclient through the SCEP proxy."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from hostsim.fleet import Fleet, start_fake_apns
from hostsim.pki import make_apns_pki
from mdmscep_common.db import drop_database
from tests.conftest import ADMIN_TOKEN, AMQP_BASE, PG_BASE, RUN_ID, _rabbitmqctl
from tests.support.scepserver import start_scepserver
from tests.support.stack import start_stack

pytestmark = pytest.mark.slow

HOSTS = 20
ENROLL_SECRET = "e2e-enroll-secret"
CUSTOM_CHALLENGE = "custom&<challenge>"
SEED = (Path(__file__).parents[1] / "integration" / "testdata" /
        "seed_scep_profile.mobileconfig").read_bytes()
API = "/api/v1/fleet"


class Admin:
    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url + API, timeout=60,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def host_profiles(self, host_uuid: str) -> dict[str, dict]:
        rows = self.http.get(f"/hosts/{host_uuid}/configuration_profiles").json()["profiles"]
        return {r["profile_uuid"]: r for r in rows}


@pytest.fixture(scope="module")
def world(base_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    # A database of its own: the stack commits, and other tests roll back in the shared one.
    database_url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_e2e"
    drop_database(database_url)
    vhost = f"mdmscep_test_{RUN_ID}_e2e"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    custom = start_scepserver(challenge=CUSTOM_CHALLENGE, organization="Admin Custom CA",
                              workdir=root / "custom-ca")
    identity = start_scepserver(challenge="identity-challenge", organization="Identity CA",
                                workdir=root / "identity-ca")
    wrong = start_scepserver(challenge="the-real-challenge", organization="Strict CA",
                             workdir=root / "strict-ca")
    pki = make_apns_pki(root / "apns")
    fleet = Fleet("http://placeholder", 0, root / "hosts", workers=8)
    apns = start_fake_apns(pki, fleet)
    stack = start_stack({**base_env, "DATABASE_URL": database_url,
                         "AMQP_URL": f"{AMQP_BASE}/{vhost}"}, root / "stack",
                        ENROLL_SECRET=ENROLL_SECRET,
                        IDENTITY_SCEP_URL=identity.url, IDENTITY_SCEP_CHALLENGE="identity-challenge",
                        MDM_IDENTITY_CA_CERTS=str(identity.depot / "ca.pem"),
                        APNS_URL=apns.url, APNS_CERT=str(pki.push_cert), APNS_KEY=str(pki.push_key),
                        APNS_CA_CERTS=str(pki.server_ca), PROFILE_RECONCILE_INTERVAL="2",
                        PROFILE_RETRY_BACKOFF="0.5", HTTP_WORKERS="2")
    try:
        stack.wait_healthy(timeout=90)
        yield {"stack": stack, "fleet": fleet, "apns": apns, "custom": custom, "wrong": wrong,
               "admin": Admin(stack.admin_url), "root": root}
    finally:
        stack.stop()
        apns.stop()
        fleet.close()
        for server in (custom, identity, wrong):
            server.stop()
        drop_database(database_url)
        _rabbitmqctl("delete_vhost", vhost)


def _enroll(world, count: int):
    from hostsim.device import SimulatedHost

    fleet, stack = world["fleet"], world["stack"]
    hosts = [SimulatedHost(stack.url("MDM_HTTP_PORT"), serial_number=f"C02E2E{len(fleet.hosts) + i:05d}",
                           workdir=world["root"] / "hosts", client=fleet.client)
             for i in range(count)]
    for host in hosts:
        fleet.add_host(host)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda h: h.enroll(ENROLL_SECRET), hosts))
    return hosts


def _wait_all(admin: Admin, hosts, profile_uuid: str, status: str, timeout: float):
    deadline = time.monotonic() + timeout
    last = {}
    while time.monotonic() < deadline:
        last = {h.udid: admin.host_profiles(h.udid).get(profile_uuid, {}) for h in hosts}
        if all(row.get("status") == status for row in last.values()):
            return last
        time.sleep(0.5)
    raise AssertionError(f"not all {status}: " + ", ".join(
        f"{u[:8]}={r.get('status')}:{r.get('detail', '')[:80]}" for u, r in last.items()))


def test_seed_flow_every_host_ends_verified_with_a_real_certificate(world):
    admin, custom = world["admin"], world["custom"]
    early = _enroll(world, HOSTS)
    # Diagram 1: the admin saves the CA; admin-config → scep-proxy → GetCACert at the CA.
    created = admin.http.post("/certificate_authorities", json={"custom_scep_proxy": {
        "name": "Test_SCEP", "url": custom.url, "challenge": CUSTOM_CHALLENGE}})
    assert created.status_code == 200, created.text
    assert "GetCACert" in custom.log()
    # Diagram 2: the seed's sample profile, unchanged.
    upload = admin.http.post("/configuration_profiles",
                             files={"profile": ("seed.mobileconfig", SEED)})
    assert upload.status_code == 200, upload.text
    profile_uuid = upload.json()["profile_uuid"]
    late = _enroll(world, 1)  # enrolls after the upload
    hosts = early + late
    _wait_all(admin, hosts, profile_uuid, "verified", timeout=240)

    ca_cert = x509.load_pem_x509_certificate(custom.ca_pem)
    for host in hosts:
        [cert] = host.profiles["Fleet.custom.SCEP"].certificates
        assert cert.issuer == ca_cert.subject
        cert.verify_directly_issued_by(ca_cert)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
            f"{host.serial_number} WIFI"  # %SerialNumber% expanded by the Mac
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == \
            "FLEET DEVICE MANAGEMENT"
        assert cert.public_key().key_size == 2048
    # Every arrow: pushes went out, the proxy forwarded all three SCEP operations to the CA.
    assert len(world["apns"].pushes) >= len(hosts)
    log = custom.log()
    for operation in ("GetCACaps", "GetCACert", "PKIOperation"):
        assert operation in log
    listed = admin.http.get("/hosts").json()["hosts"]
    assert {h.udid for h in hosts} <= {h["uuid"] for h in listed if h["enrolled"]}


def test_a_ca_expecting_another_challenge_fails_after_three_attempts_with_its_answer(world):
    admin, wrong = world["admin"], world["wrong"]
    hosts = world["fleet"].hosts[:3] if world["fleet"].hosts else _enroll(world, 3)
    created = admin.http.post("/certificate_authorities", json={"custom_scep_proxy": {
        "name": "Strict_CA", "url": wrong.url, "challenge": "not-the-challenge"}})
    assert created.status_code == 200, created.text
    profile = SEED.replace(b"Test_SCEP", b"Strict_CA").replace(b"Fleet.custom.SCEP",
                                                                b"Fleet.strict.SCEP") \
                  .replace(b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC",
                           b"5CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC")
    upload = admin.http.post("/configuration_profiles", files={"profile": ("strict.mobileconfig",
                                                                           profile)})
    assert upload.status_code == 200, upload.text
    rows = _wait_all(admin, world["fleet"].hosts, upload.json()["profile_uuid"], "failed",
                     timeout=240)
    for row in rows.values():
        assert "badRequest" in row["detail"] or "failInfo" in row["detail"], row["detail"]
    for host in hosts:
        attempts = [c for c in host.received if c["Command"]["RequestType"] == "InstallProfile"
                    and b"Strict_CA" in c["Command"]["Payload"]]
        assert len(attempts) == 3
