"""What admins of large fleets use: filtered, paginated lists with totals, per-profile summaries,
re-send and retry, host detail and delete, replace-in-place, and API tokens — against the real
database, bus, processor, Commander and simulated hosts."""

from __future__ import annotations

import io

import pytest

from tests.admin_config.test_configuration_profiles import upload
from tests.conftest import ADMIN_TOKEN
from tests.profile_processor.test_profile_delivery import (
    SEED,
    SPECIAL_CHALLENGE,
    installs,
    statuses,
    wait_for,
    wait_status,
)
from tests.support.scepserver import start_scepserver
from tests.support.service_fixtures import AdminClient, create_ca

PROFILES = "/api/v1/fleet/configuration_profiles"


@pytest.fixture(scope="module")
def ca_server(tmp_path_factory):
    server = start_scepserver(challenge=SPECIAL_CHALLENGE, workdir=tmp_path_factory.mktemp("ca"))
    yield server
    server.stop()


@pytest.fixture
def fleet(mdm, live_admin, ca_server, start_processor):
    """Three hosts with the seed profile delivered: two verified, one failing on the device."""
    start_processor()
    hosts = [mdm.new_host() for _ in range(3)]
    for host in hosts:
        host.scep_url_override = ca_server.url
    hosts[2].install_error = "The profile could not be installed: low disk space"
    assert create_ca(live_admin, "Test_SCEP", ca_server.url, SPECIAL_CHALLENGE).status_code == 200
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]
    for host in hosts[:2]:
        wait_status(live_admin, host, profile_uuid, "verified")
    wait_status(live_admin, hosts[2], profile_uuid, "failed")
    return hosts, profile_uuid


def test_summary_and_filtered_lists_match_the_per_host_statuses(live_admin, fleet):
    hosts, profile_uuid = fleet
    summary = live_admin.get(f"{PROFILES}/{profile_uuid}/summary").json
    assert summary == {"profile_uuid": profile_uuid, "pending": 0, "verifying": 0, "verified": 2,
                       "failed": 1, "total": 3}
    per_host = [statuses(live_admin, h)[profile_uuid]["status"] for h in hosts]
    assert sorted(per_host) == ["failed", "verified", "verified"]

    failed = live_admin.get(f"{PROFILES}/{profile_uuid}/hosts?status=failed").json
    assert failed["meta"]["total"] == 1
    assert failed["hosts"][0]["host_uuid"] == hosts[2].udid
    assert "low disk space" in failed["hosts"][0]["detail"]
    listed = live_admin.get(f"/api/v1/fleet/hosts?status=failed&profile_uuid={profile_uuid}").json
    assert [h["uuid"] for h in listed["hosts"]] == [hosts[2].udid] and listed["meta"]["total"] == 1
    by_serial = live_admin.get(f"/api/v1/fleet/hosts?query={hosts[1].serial_number[-6:].lower()}").json
    assert [h["uuid"] for h in by_serial["hosts"]] == [hosts[1].udid]
    by_uuid = live_admin.get(f"/api/v1/fleet/hosts?query={hosts[0].udid[:13]}").json
    assert [h["uuid"] for h in by_uuid["hosts"]] == [hosts[0].udid]
    # Stable pages: enrollment order, every host once.
    pages = [live_admin.get(f"/api/v1/fleet/hosts?per_page=1&page={n}").json for n in range(3)]
    assert [p["hosts"][0]["uuid"] for p in pages] == [h.udid for h in hosts]
    assert all(p["meta"] == {"total": 3, "page": n, "per_page": 1} for n, p in enumerate(pages))
    for bad in ("status=done", "per_page=0", "page=-1"):
        assert live_admin.get(f"/api/v1/fleet/hosts?{bad}").status_code == 400
    assert live_admin.get(f"{PROFILES}/nope/summary").status_code == 404
    activities = live_admin.get("/api/v1/fleet/activities?type=added_custom_scep_proxy").json
    assert activities["meta"]["total"] == 1 and activities["activities"][0]["actor"] == "admin"
    assert live_admin.get("/api/v1/fleet/activities?actor=nobody").json["meta"]["total"] == 0


def test_retry_failed_and_resend_give_a_fresh_budget(live_admin, fleet):
    hosts, profile_uuid = fleet
    hosts[2].install_error = None  # the admin freed some disk
    response = live_admin.post(f"{PROFILES}/{profile_uuid}/retry_failed")
    assert (response.status_code, response.json) == (202, {"hosts": 1})
    wait_status(live_admin, hosts[2], profile_uuid, "verified")
    assert len(installs(hosts[2])) == 4  # 3 failed attempts, then a fresh budget

    before = len(installs(hosts[0]))
    resend = live_admin.post(f"/api/v1/fleet/hosts/{hosts[0].udid}/configuration_profiles/"
                             f"{profile_uuid}/resend")
    assert resend.status_code == 202
    wait_for(lambda: len(installs(hosts[0])) == before + 1, what="re-sent copy")
    wait_status(live_admin, hosts[0], profile_uuid, "verified")
    types = [a["type"] for a in live_admin.get("/api/v1/fleet/activities").json["activities"][:2]]
    assert types == ["resent_configuration_profile", "retried_configuration_profile"]
    assert live_admin.post(f"/api/v1/fleet/hosts/nope/configuration_profiles/{profile_uuid}/"
                           "resend").status_code == 404
    assert live_admin.post(f"/api/v1/fleet/hosts/{hosts[0].udid}/configuration_profiles/nope/"
                           "resend").status_code == 404


def test_host_detail_delete_and_enroll_again(live_admin, fleet):
    from tests.support.service_fixtures import ENROLL_SECRET

    hosts, profile_uuid = fleet
    host = hosts[0]
    detail = live_admin.get(f"/api/v1/fleet/hosts/{host.udid}").json
    assert detail["serial_number"] == host.serial_number and detail["enrolled"]
    assert detail["profiles"]["verified"] == 1 and detail["model"] == host.model
    assert live_admin.delete(f"/api/v1/fleet/hosts/{host.udid}").status_code == 204
    assert live_admin.get(f"/api/v1/fleet/hosts/{host.udid}").status_code == 404
    assert live_admin.delete(f"/api/v1/fleet/hosts/{host.udid}").status_code == 404
    received = len(host.received)
    host.enroll(ENROLL_SECRET)  # the same device comes back
    wait_status(live_admin, host, profile_uuid, "verified")
    assert len(host.received) > received
    assert live_admin.get("/api/v1/fleet/activities?type=deleted_host").json["meta"]["total"] == 1
    # A host that never enrolled has no delivery to re-send.
    assert live_admin.post(f"/api/v1/fleet/hosts/{host.udid}x/configuration_profiles/"
                           f"{profile_uuid}/resend").status_code == 404


def test_replace_in_place_never_removes_the_profile(live_admin, fleet):
    hosts, profile_uuid = fleet
    new = SEED.replace(b"<string>SCEP proxy cert</string>", b"<string>SCEP proxy cert v2</string>")
    response = live_admin.put(f"{PROFILES}/{profile_uuid}",
                              data={"profile": (io.BytesIO(new), "v2.mobileconfig")},
                              content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    assert response.json["name"] == "SCEP proxy cert v2"
    for host in hosts[:2]:
        wait_for(lambda h=host: b"SCEP proxy cert v2" in installs(h)[-1]["Command"]["Payload"],
                 what="new content")
        wait_status(live_admin, host, profile_uuid, "verified")
        assert not [c for c in host.received if c["Command"]["RequestType"] == "RemoveProfile"]
        assert host.profiles["Fleet.custom.SCEP"].display_name == "SCEP proxy cert v2"
    other = SEED.replace(b"Fleet.custom.SCEP", b"Fleet.other.SCEP")
    refused = live_admin.put(f"{PROFILES}/{profile_uuid}",
                             data={"profile": (io.BytesIO(other), "x.mobileconfig")},
                             content_type="multipart/form-data")
    assert refused.status_code == 400 and "must be the one it replaces" in refused.json["message"]
    assert live_admin.get("/api/v1/fleet/activities?type=edited_configuration_profile").json[
        "meta"]["total"] == 1


def test_api_tokens_are_shown_once_and_revoked_at_once(live_admin, live_admin_app):
    created = live_admin.post("/api/v1/fleet/api_tokens", json={"name": "ci-bot", "role": "admin"})
    assert created.status_code == 200 and created.json["name"] == "ci-bot"
    assert created.json["role"] == "admin"
    bot = AdminClient(live_admin_app.test_client(), created.json["token"])
    assert bot.get("/api/v1/fleet/hosts").status_code == 200
    listed = live_admin.get("/api/v1/fleet/api_tokens").json["api_tokens"]
    [row] = [t for t in listed if t["name"] == "ci-bot"]
    assert row["last_used_at"] and row["revoked_at"] is None and "token" not in row
    assert row["role"] == "admin"
    assert live_admin.post("/api/v1/fleet/api_tokens", json={"name": "ci-bot"}).status_code == 409
    assert live_admin.post("/api/v1/fleet/api_tokens", json={"name": "bad name"}).status_code == 422
    assert bot.post("/api/v1/fleet/api_tokens", json={"name": "by-bot"}).status_code == 200
    assert live_admin.get("/api/v1/fleet/activities?actor=ci-bot").json["activities"][0]["type"] \
        == "created_api_token"
    assert live_admin.delete("/api/v1/fleet/api_tokens/ci-bot").status_code == 204
    assert bot.get("/api/v1/fleet/hosts").status_code == 401
    assert live_admin.delete("/api/v1/fleet/api_tokens/ci-bot").status_code == 404
    # The bootstrap token (ADMIN_API_TOKEN) keeps working.
    assert AdminClient(live_admin_app.test_client(), ADMIN_TOKEN).get(
        "/api/v1/fleet/hosts").status_code == 200
