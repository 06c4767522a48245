"""Adaptive issuance pacing end to end: the stack as processes, simulated Macs running the real
scepclient through the SCEP proxy, and a real scepserver behind a relay that issues one
certificate at a time, each taking at least SERVICE_SECONDS (tests/support/throttled_ca.py): a CA
whose own sustainable rate is known, and lower than the hosts can ask for. (The scepserver alone
issues in a few ms: faster than this 2-core machine's stack and hosts could drive it; its rate is
printed too.)

The CA's rate is measured first, straight from scepclients. Then the processor, starting at 5
certificates/s (1 allowed concurrent request × 5), learns from the CA's answers: the rate in the
stats API rises toward the CA's own. Then the CA turns slow (0.4 s more per certificate), then
failing (503): each time the rate is halved within seconds, with its reason in the stats and in
the processor's metrics.

`make bench` runs the long version (MDMSCEP_PACING_LONG=1, bench/pacing_bench.py): more hosts,
a minute of learning, and the whole trace printed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.scepserver import direct_rate
from tests.support.throttled_ca import ThrottledCa
from tests.support.waiting import eventually
from tests.support.world import running_world

pytestmark = pytest.mark.slow

LONG = os.environ.get("MDMSCEP_PACING_LONG") == "1"
CHALLENGE = "adaptive-challenge"
CA_NAME = "Adaptive_CA"
# The CA's own rate: at most 14 certificates/s, under what this machine's hosts and stack ask
# for (about 15-20/s with other jobs on the machine), above the start: it is the CA that limits.
SERVICE_SECONDS = 0.07
START_RATE = 5.0  # max_concurrent_requests 1 × 5/s
HOSTS, PROFILES = (100, 10) if LONG else (60, 6)
RAMP_SECONDS = 60.0 if LONG else 20.0
SEED = (Path(__file__).parents[1] / "testdata" /
        "seed_scep_profile.mobileconfig").read_bytes()


def _key_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())


def _profile(n: int) -> bytes:
    """The seed's profile, one of several using the CA (a subject per profile: the hosts ask
    for one certificate after another)."""
    return (SEED.replace(b"Test_SCEP", CA_NAME.encode())
            .replace(b"Fleet.custom.SCEP", f"Fleet.adaptive.{n}".encode())
            .replace(b"%SerialNumber% WIFI", f"%SerialNumber% P{n}".encode())
            .replace(b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC",
                     f"4CD1BD65-1D2C-4E9E-9E18-{n:012d}".encode()))


@pytest.fixture(scope="module")
def world(base_env, tmp_path_factory):
    with running_world(base_env, tmp_path_factory.mktemp("adaptive"), "adaptive",
                       {"ca": (CHALLENGE, "Adaptive CA")}, SCEP_PROXY_QUEUE_TIMEOUT="30") as w:
        yield w


def processor_metric(world, name: str, **labels: str) -> float | None:
    text = httpx.get(world.stack.url("PROCESSOR_METRICS_PORT") + "/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return None


def test_the_rate_is_learned_from_a_real_ca_and_backed_off_within_seconds(world):
    scepserver = world.cas["ca"]
    ca = ThrottledCa(scepserver.url.removesuffix("/scep"), SERVICE_SECONDS)
    key_pem = _key_pem()
    try:
        own = direct_rate(ca.url, CHALLENGE, key_pem, clients=4, seconds=4 if LONG else 2)
        bare = direct_rate(scepserver.url, CHALLENGE, key_pem, clients=4, seconds=4) if LONG else None
        print(f"\nstraight from 4 scepclients: the CA {own:.1f} certificates/s"
              + (f" (the scepserver without the relay: {bare:.1f}/s)" if bare else ""))
        assert own > START_RATE  # a CA worth learning: faster than the start

        hosts = world.enroll(HOSTS)
        for host in hosts:
            host.scep_key_pem = key_pem
        created = world.admin.http.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": CA_NAME, "url": ca.url, "challenge": CHALLENGE,
            "max_concurrent_requests": 1}})
        assert created.status_code == 200, created.text
        ca_id = created.json()["id"]
        started = time.monotonic()
        for n in range(PROFILES):
            upload = world.admin.http.post("/configuration_profiles", files={
                "profile": (f"adaptive-{n}.mobileconfig", _profile(n))})
            assert upload.status_code == 200, upload.text

        def stats() -> dict:
            return world.admin.http.get(f"/certificate_authorities/{ca_id}/stats").json()

        # Learning: the CA answers fast, deliveries wait; the rate rises.
        trace, reached = [], None
        while time.monotonic() - started < RAMP_SECONDS:
            time.sleep(2 if LONG else 1)
            now = stats()
            rate = now["issuance_rate"]
            trace.append((time.monotonic() - started, rate["per_second"], rate["reason"],
                          ca.issued_per_second(4), now["waiting"]))
            if reached is None and rate["per_second"] >= 0.8 * own:
                reached = time.monotonic() - started
        print(f"{HOSTS} hosts × {PROFILES} profiles; seconds, learned rate/s, its reason, "
              "certificates issued/s (last 4 s), deliveries waiting:")
        for at, per_second, reason, issued, waiting in trace:
            print(f"  {at:5.1f}  {per_second:6.2f}  {reason:13}  {issued:5.1f}  {waiting:5d}")
        best = max(t[1] for t in trace)
        print(f"learned rate: {best:.1f}/s at best (the CA's own {own:.1f}/s; start "
              f"{START_RATE:g}/s); 80 % of the CA's own "
              + (f"after {reached:.0f} s" if reached is not None else "not reached")
              + f"; issued at best {max(t[3] for t in trace):.1f}/s")
        assert best >= 1.5 * START_RATE, trace
        assert stats()["waiting"] > 0  # still deliveries for the CA: the next phases need them

        def backs_off(reason: str, timeout: float) -> tuple[float, float, float]:
            """Seconds until the rate is decreased for `reason`, and the rate before and after."""
            before = stats()["issuance_rate"]
            since = time.monotonic()
            while time.monotonic() - since < timeout:
                rate = stats()["issuance_rate"]
                if rate["reason"] == reason and rate["changed_at"] != before["changed_at"]:
                    return time.monotonic() - since, before["per_second"], rate["per_second"]
                time.sleep(0.2)
            raise AssertionError(f"no {reason} decrease within {timeout} s: {rate}")

        ca.extra_seconds = 0.4  # slow: each certificate takes 0.44 s
        took, before, after = backs_off("slow_answer", 20)
        print(f"the CA made slow: {before:.1f}/s → {after:.1f}/s after {took:.1f} s")
        assert after < before  # halved (from what it had grown to meanwhile)
        # The gauge says the rate of the moment (read together: it may move again meanwhile).
        assert eventually(lambda: processor_metric(world, "mdmscep_ca_issuance_rate", ca=CA_NAME)
                          == pytest.approx(stats()["issuance_rate"]["per_second"], rel=0.05),
                          10, 0.2), "the processor's gauge follows the rate"
        assert processor_metric(world, "mdmscep_ca_issuance_rate_changes_total", ca=CA_NAME,
                                reason="slow_answer") >= 1

        ca.extra_seconds, ca.fail_status = 0.0, 503  # failing: the CA answers 503
        took, before, after = backs_off("server_error", 15)
        print(f"the CA made failing (503): {before:.1f}/s → {after:.1f}/s after {took:.1f} s")
        assert after < before
        assert processor_metric(world, "mdmscep_ca_issuance_rate_changes_total", ca=CA_NAME,
                                reason="server_error") >= 1
    finally:
        ca.close()
