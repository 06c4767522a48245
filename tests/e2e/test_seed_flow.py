"""The seed's two diagrams end to end, every arrow, with real parts: the stack started by the
`make run` launcher, real scepservers (the admin's custom CA and the identity CA), an HTTP/2
fake APNs, and simulated Macs that run the real scepclient through the SCEP proxy."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.world import running_world

pytestmark = pytest.mark.slow

HOSTS = 20
CUSTOM_CHALLENGE = "custom&<challenge>"
SEED = (Path(__file__).parents[1] / "testdata" /
        "seed_scep_profile.mobileconfig").read_bytes()


@pytest.fixture(scope="module")
def world(base_env, tmp_path_factory):
    with running_world(base_env, tmp_path_factory.mktemp("e2e"), "e2e", {
            "custom": (CUSTOM_CHALLENGE, "Admin Custom CA"),
            "wrong": ("the-real-challenge", "Strict CA")}) as w:
        yield w


def test_a_ca_expecting_another_challenge_fails_after_three_attempts_with_its_answer(world):
    """Runs first, on three hosts: every failed attempt halves the CA's pace (a CA refusing is
    backed off), so each host more makes the test seconds longer."""
    admin, wrong = world.admin, world.cas["wrong"]
    hosts = world.enroll(3)
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
    profile_uuid = upload.json()["profile_uuid"]
    rows = world.wait_all(hosts, profile_uuid, "failed", timeout=240)
    for row in rows.values():
        assert "badRequest" in row["detail"] or "failInfo" in row["detail"], row["detail"]
    for host in hosts:
        attempts = [c for c in host.received if c["Command"]["RequestType"] == "InstallProfile"
                    and b"Strict_CA" in c["Command"]["Payload"]]
        assert len(attempts) == 3
    # The hosts enrolled next are the seed flow's only.
    assert admin.http.delete(f"/configuration_profiles/{profile_uuid}").status_code in (200, 204)


def test_seed_flow_every_host_ends_verified_with_a_real_certificate(world):
    admin, custom = world.admin, world.cas["custom"]
    early = world.enroll(HOSTS)
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
    late = world.enroll(1)  # enrolls after the upload
    hosts = early + late
    world.wait_all(hosts, profile_uuid, "verified", timeout=240)

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
    assert len(world.apns.pushes) >= len(hosts)
    log = custom.log()
    for operation in ("GetCACaps", "GetCACert", "PKIOperation"):
        assert operation in log
    listed = admin.http.get("/hosts").json()["hosts"]
    assert {h.udid for h in hosts} <= {h["uuid"] for h in listed if h["enrolled"]}
