"""Protecting a fragile CA: 50 simulated Macs get a SCEP profile at once. With the per-CA limit
at 1, micromdm's scepserver (whose serial counter races under concurrency) issues every
certificate with a distinct serial and every host ends verified. With the limit raised to 32 on
another such CA, the duplicates and failures that appear are printed, and failures are retried
to success within the attempt budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.world import running_world

pytestmark = pytest.mark.slow

HOSTS = 50
CHALLENGE = "fragile-challenge"
SEED = (Path(__file__).parents[1] / "testdata" /
        "seed_scep_profile.mobileconfig").read_bytes()


@pytest.fixture(scope="module")
def world(base_env, tmp_path_factory):
    with running_world(base_env, tmp_path_factory.mktemp("ca-protection"), "caprot", {
            "fragile": (CHALLENGE, "Fragile CA"), "unprotected": (CHALLENGE, "Unprotected CA")},
            SCEP_PROXY_QUEUE_TIMEOUT="30") as w:
        w.enroll(HOSTS)
        yield w


def _profile_for(ca_name: str, identifier: str, payload_uuid: str) -> bytes:
    return (SEED.replace(b"Test_SCEP", ca_name.encode())
                .replace(b"Fleet.custom.SCEP", identifier.encode())
                .replace(b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC", payload_uuid.encode()))


def _deliver(world, ca_key: str, ca_name: str, identifier: str, payload_uuid: str, **limits):
    created = world.admin.http.post("/certificate_authorities", json={"custom_scep_proxy": {
        "name": ca_name, "url": world.cas[ca_key].url, "challenge": CHALLENGE, **limits}})
    assert created.status_code == 200, created.text
    upload = world.admin.http.post("/configuration_profiles", files={
        "profile": (f"{ca_name}.mobileconfig", _profile_for(ca_name, identifier, payload_uuid))})
    assert upload.status_code == 200, upload.text
    return created.json()["id"], upload.json()["profile_uuid"]


def _serials(hosts, identifier: str) -> Counter:
    return Counter(c.serial_number for h in hosts for c in h.profiles[identifier].certificates)


def _attempts(hosts, ca_name: str) -> int:
    return sum(1 for h in hosts for c in h.received
               if c["Command"]["RequestType"] == "InstallProfile"
               and ca_name.encode() in c["Command"]["Payload"])


def test_with_the_limit_at_one_every_certificate_is_distinct(world):
    hosts = world.fleet.hosts
    ca_id, profile_uuid = _deliver(world, "fragile", "Fragile_CA", "Fleet.fragile.SCEP",
                                   "1CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC",
                                   max_concurrent_requests=1)
    world.wait_all(hosts, profile_uuid, "verified", timeout=420)
    serials = _serials(hosts, "Fleet.fragile.SCEP")
    stats = world.admin.http.get(f"/certificate_authorities/{ca_id}/stats").json()
    print(f"\nlimit 1: {len(hosts)} hosts verified, {len(serials)} distinct serials, "
          f"duplicates {sum(n - 1 for n in serials.values())}, SCEP failures {stats['failed']}, "
          f"InstallProfile attempts {_attempts(hosts, 'Fragile_CA')}, "
          f"average CA latency {stats['average_latency_ms']} ms")
    assert len(serials) == len(hosts) == HOSTS
    assert stats["issued"] >= HOSTS and stats["in_flight"] == 0


def test_with_the_limit_at_32_failures_are_counted_and_retried(world):
    hosts = world.fleet.hosts
    ca_id, profile_uuid = _deliver(world, "unprotected", "Unprotected_CA",
                                   "Fleet.unprotected.SCEP", "2CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC",
                                   max_concurrent_requests=32, max_issuance_per_second=1000)
    rows = world.wait_all(hosts, profile_uuid, "verified", timeout=420)
    serials = _serials(hosts, "Fleet.unprotected.SCEP")
    stats = world.admin.http.get(f"/certificate_authorities/{ca_id}/stats").json()
    attempts = _attempts(hosts, "Unprotected_CA")
    print(f"\nlimit 32: {len(rows)} hosts verified, duplicate serials "
          f"{sum(n - 1 for n in serials.values())}, SCEP failures {stats['failed']} "
          f"(retried: {attempts - HOSTS} extra InstallProfile attempts)")
    assert len(rows) == HOSTS
    # Every failed attempt was followed by a fresh one (a new command, a new code) that the host
    # installed: the extra attempts cover the failures, and no host stopped at a failure.
    failed = 0
    for host in hosts:
        ours = {c["CommandUUID"] for c in host.received
                if c["Command"]["RequestType"] == "InstallProfile"
                and b"Unprotected_CA" in c["Command"]["Payload"]}
        results = [status for kind, command, status in host.handled if command in ours]
        failed += results.count("Error")
        assert results and results[-1] == "Acknowledged", (host.udid, results)
    assert attempts - HOSTS >= failed
