"""Certificate inventory, verification by certificate, and automatic renewal, with a real
scepserver (`-allowrenew 0`, short validity) and simulated hosts; the processor's clock is moved
instead of waiting days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.admin_config.test_configuration_profiles import upload
from tests.profile_processor.test_profile_delivery import SEED, installs, wait_for, wait_status
from tests.support.scepserver import start_scepserver
from tests.support.service_fixtures import create_ca

CHALLENGE = "short-lived-challenge"


@pytest.fixture(scope="module")
def short_ca(tmp_path_factory):
    """Issues certificates valid 3 days: renewed at half their validity (1.5 days)."""
    server = start_scepserver(challenge=CHALLENGE, workdir=tmp_path_factory.mktemp("short-ca"),
                              valid_days=3)
    yield server
    server.stop()


@pytest.fixture
def hosts(mdm, short_ca):
    def make(count):
        made = [mdm.new_host() for _ in range(count)]
        for host in made:
            host.scep_url_override = short_ca.url
        return made
    return make


def test_inventory_lists_each_hosts_certificate(mdm, hosts, live_admin, start_processor, short_ca):
    start_processor()
    [a, b] = hosts(2)
    profile_uuid = upload_after_ca(live_admin, short_ca)
    for host in (a, b):
        wait_status(live_admin, host, profile_uuid, "verified")
    [cert] = a.profiles["Fleet.custom.SCEP"].certificates
    [row] = live_admin.get(f"/api/v1/fleet/hosts/{a.udid}/certificates").json["certificates"]
    assert row["serial"] == format(cert.serial_number, "x")
    assert row["subject"] == cert.subject.rfc4514_string()
    assert row["issuer"] == cert.issuer.rfc4514_string()
    assert row["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["profile_uuid"] == profile_uuid and row["profile_name"] == "SCEP proxy cert"
    soon = live_admin.get("/api/v1/fleet/certificates?expiring_within_days=4").json["certificates"]
    assert {r["host_uuid"] for r in soon} == {a.udid, b.udid}
    assert live_admin.get("/api/v1/fleet/certificates?expiring_within_days=1").json[
        "certificates"] == []
    assert live_admin.get("/api/v1/fleet/certificates?expiring_within_days=x").status_code == 400
    assert live_admin.get("/api/v1/fleet/hosts/nope/certificates").status_code == 404


def upload_after_ca(live_admin, ca):
    assert create_ca(live_admin, "Test_SCEP", ca.url, CHALLENGE).status_code == 200
    return upload(live_admin, SEED).json["profile_uuid"]


def test_acknowledged_without_a_certificate_ends_failed(mdm, hosts, live_admin, start_processor,
                                                        short_ca):
    start_processor(PROFILE_CERTIFICATE_WAIT="1")
    [host] = hosts(1)
    host.fetch_certificates = False  # installs the profile, never enrolls
    profile_uuid = upload_after_ca(live_admin, short_ca)
    row = wait_status(live_admin, host, profile_uuid, "failed")
    assert "holds no certificate" in row["detail"]
    assert len(installs(host)) == 1


def test_automatic_renewal_replaces_the_certificate(mdm, mdm_db, hosts, live_admin,
                                                     start_processor, admin_events, short_ca):
    replica = start_processor()
    [host] = hosts(1)
    profile_uuid = upload_after_ca(live_admin, short_ca)
    wait_status(live_admin, host, profile_uuid, "verified")
    [old] = host.profiles["Fleet.custom.SCEP"].certificates
    assert old.not_valid_after_utc - old.not_valid_before_utc >= timedelta(days=2)

    # A day later nothing is due; 1.6 days after issue (past half of 3 days) it is.
    issued = old.not_valid_before_utc
    replica.reconciler.clock = lambda: issued + timedelta(days=1)
    assert replica.reconciler.start_renewals() == 0
    replica.reconciler.clock = lambda: issued + timedelta(days=1.6)
    assert replica.reconciler.start_renewals() == 1
    # Back to the real time, or the loop would renew the new certificate again at once.
    replica.reconciler.clock = lambda: datetime.now(UTC)
    wait_for(lambda: len(installs(host)) == 2, what="renewal sent")
    row = wait_status(live_admin, host, profile_uuid, "verified")
    assert row["detail"] == ""
    [new] = host.profiles["Fleet.custom.SCEP"].certificates  # the old one is gone
    assert new.serial_number != old.serial_number
    listed = live_admin.get(f"/api/v1/fleet/hosts/{host.udid}/certificates").json["certificates"]
    assert [c["serial"] for c in listed] == [format(new.serial_number, "x")]
    # The processor announces the renewal (certificates.renewed); admin-config records it.
    activity = wait_for(lambda: live_admin.get("/api/v1/fleet/activities?type=renewed_certificates")
                        .json["activities"], what="renewed_certificates activity")[0]
    assert activity["actor"] == "profile-processor"
    assert activity["details"] == {"hosts": 1, "profile_uuids": [profile_uuid]}
    # Renewal is once per certificate: the new one is not due yet.
    replica.reconciler.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    assert replica.reconciler.start_renewals() == 0


def test_renewal_policy():
    from profile_processor.issued_certificates import renewal_due_at

    start = datetime(2026, 1, 1, tzinfo=UTC)
    year = renewal_due_at(start, start + timedelta(days=365), 30, "h,p")
    assert start + timedelta(days=365 - 30 - 3.75) <= year <= start + timedelta(days=335)
    short = renewal_due_at(start, start + timedelta(days=10), 30, "h,p")
    assert start + timedelta(days=4.3) <= short <= start + timedelta(days=5)
    assert renewal_due_at(start, start + timedelta(days=1), 30, "h,p") is None
    spread = {renewal_due_at(start, start + timedelta(days=365), 30, f"h{i},p") for i in range(50)}
    assert len(spread) == 50  # a fleet issued the same day is renewed over several days
    assert max(spread) - min(spread) > timedelta(days=2)
