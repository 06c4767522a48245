"""Teams and labels end to end, with real parts: two teams whose SCEP profiles name different
CAs (two real scepservers), a manual label that narrows one team's profiles, and the label moved
from one host to another. Every host ends with exactly the certificates of the profiles in its
scope (verified by the product, and checked on the simulated Macs themselves); the profiles a
host left were removed with their certificates."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.world import running_world

pytestmark = pytest.mark.slow

SEED = (Path(__file__).parents[1] / "testdata" /
        "seed_scep_profile.mobileconfig").read_bytes()
CHALLENGES = {"alpha": "alpha-challenge", "beta": "beta&challenge"}


def _scep_profile(ca_name: str, identifier: str) -> bytes:
    """The seed profile for another CA, with its own identifiers."""
    return (SEED.replace(b"Test_SCEP", ca_name.encode())
            .replace(b"Fleet.custom.SCEP", identifier.encode())
            .replace(b"com.fleetdm.custom.scep", f"{identifier}.scep".encode())
            .replace(b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC", str(uuid.uuid4()).upper().encode())
            .replace(b"9DCC35A5-72F9-42B7-9A98-7AD9A9CCA3AC", str(uuid.uuid4()).upper().encode()))


@pytest.fixture(scope="module")
def world(base_env, tmp_path_factory):
    with running_world(base_env, tmp_path_factory.mktemp("teams"), "teams", {
            name: (challenge, f"{name.title()} CA") for name, challenge in CHALLENGES.items()}) as w:
        yield w


def _ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json() if status == 200 else None


def _issuers(host) -> dict[str, x509.Name]:
    """The simulated Mac's installed profiles → the issuer of the certificate each brought."""
    out = {}
    for identifier, profile in host.profiles.items():
        [cert] = profile.certificates
        out[identifier] = cert.issuer
    return out


def _wait_for(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_teams_get_their_own_cas_certificates_and_a_label_moves_a_host(world):
    admin = world.admin
    for name, server in world.cas.items():
        _ok(admin.http.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": f"{name.title()}_SCEP", "url": server.url, "challenge": CHALLENGES[name]}}))
    alpha_ca = x509.load_pem_x509_certificate(world.cas["alpha"].ca_pem).subject
    beta_ca = x509.load_pem_x509_certificate(world.cas["beta"].ca_pem).subject
    engineering = _ok(admin.http.post("/teams", json={"name": "Engineering"}))["team"]["id"]
    sales = _ok(admin.http.post("/teams", json={"name": "Sales"}))["team"]["id"]
    eng_a, eng_b, sales_a = world.enroll(3)
    _ok(admin.http.post("/hosts/transfer", json={"team_id": engineering,
                                                 "hosts": [eng_a.udid, eng_b.udid]}))
    _ok(admin.http.post("/hosts/transfer", json={"team_id": sales, "hosts": [sales_a.udid]}))
    pilot = _ok(admin.http.post("/labels", json={"name": "Pilot",
                                                 "hosts": [eng_b.udid]}))["label"]["id"]

    def upload(identifier: str, ca: str, team: int, **labels) -> str:
        fields = {"team_id": str(team), **labels}
        return _ok(admin.http.post("/configuration_profiles", data=fields, files={
            "profile": (f"{identifier}.mobileconfig", _scep_profile(ca, identifier))}))["profile_uuid"]

    eng_wifi = upload("eng.wifi", "Alpha_SCEP", engineering, labels_exclude_any=["Pilot"])
    eng_pilot = upload("eng.pilot", "Beta_SCEP", engineering, labels_include_all=["Pilot"])
    sales_wifi = upload("sales.wifi", "Beta_SCEP", sales)

    world.wait_all([eng_a], eng_wifi, "verified", timeout=180)
    world.wait_all([eng_b], eng_pilot, "verified", timeout=180)
    world.wait_all([sales_a], sales_wifi, "verified", timeout=180)
    expected = {eng_a: {"eng.wifi": alpha_ca}, eng_b: {"eng.pilot": beta_ca},
                sales_a: {"sales.wifi": beta_ca}}
    for host, issuers in expected.items():
        assert _issuers(host) == issuers
        assert set(admin.host_profiles(host.udid)) == \
            {eng_wifi if "eng.wifi" in issuers else eng_pilot if "eng.pilot" in issuers
             else sales_wifi}
    # The sales profile counts only the host in its scope.
    assert admin.profile_summary(sales_wifi)["total"] == 1

    # The pilot moves from one engineer to the other: each swaps profiles (and CAs).
    _ok(admin.http.patch(f"/labels/{pilot}", json={"hosts": [eng_a.udid]}))
    world.wait_all([eng_b], eng_wifi, "verified", timeout=180)
    world.wait_all([eng_a], eng_pilot, "verified", timeout=180)
    _wait_for(lambda: set(admin.host_profiles(eng_a.udid)) == {eng_pilot}
              and set(admin.host_profiles(eng_b.udid)) == {eng_wifi}, "the removals")
    assert _issuers(eng_a) == {"eng.pilot": beta_ca}
    assert _issuers(eng_b) == {"eng.wifi": alpha_ca}
    assert _issuers(sales_a) == {"sales.wifi": beta_ca}  # untouched
    # The product's certificate inventory agrees with the hosts.
    for host, ca in ((eng_a, beta_ca), (eng_b, alpha_ca)):
        _wait_for(lambda h=host: len(admin.http.get(f"/hosts/{h.udid}/certificates")
                                     .json()["certificates"]) == 1, "the inventory")
        [cert] = admin.http.get(f"/hosts/{host.udid}/certificates").json()["certificates"]
        assert cert["issuer"] == ca.rfc4514_string()
    kinds = {a["type"] for a in admin.http.get("/activities", params={"per_page": 100})
             .json()["activities"]}
    assert {"created_team", "transferred_hosts", "created_label", "edited_label"} <= kinds
