"""Host facts (mdm_endpoint/host_facts.py): a host is asked DeviceInformation when it enrolls and
again once its facts are HOST_FACTS_INTERVAL old; its answer is kept (never published as a
command result; the facts labels use, when they change, as host.facts_changed), and the admin API
lists hosts by those facts. Real mdm-endpoint, PostgreSQL, RabbitMQ and fake APNs."""

from __future__ import annotations

from mdm_endpoint.host_facts import (
    PLATFORM_PREFIXES,
    FactRefresh,
    FactRequests,
    facts_of,
    platform_of,
    platform_sql,
)
from mdm_endpoint.store import CommandStore
from mdmscep_common.crypto import SecretBox
from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.bus_listener import BusListener
from tests.support.waiting import eventually

HOSTS = "/api/v1/fleet/hosts"


def _facts(mdm_db, udid):
    with mdm_db.transaction() as conn:
        return conn.execute("SELECT serial_number, device_name, model, os_version, product_name, "
                            "facts_updated_at, facts_requested_at FROM hosts WHERE uuid = %s",
                            (udid,)).fetchone()


def test_an_enrolled_host_is_asked_its_facts_and_they_are_kept(mdm, mdm_db, amqp_url):
    listener = BusListener(amqp_url, ["command.result", "host.enrolled", "host.facts_changed"])
    try:
        mac = mdm.new_host(model="Mac15,3", os_version="15.1")
        phone = mdm.new_host(model="iPhone16,1", platform="iOS", os_version="18.1")
        for host, product in ((mac, "Mac15,3"), (phone, "iPhone16,1")):
            row = _facts(mdm_db, host.udid)
            assert row["product_name"] == product and row["os_version"] == host.os_version
            assert row["serial_number"] == host.serial_number
            assert row["facts_updated_at"] is not None and row["facts_requested_at"] is not None
        # mdm-endpoint's own question: its answers never reach the bus as command.result.
        assert not listener.wait_for(lambda k, b: b.get("request_type") == "DeviceInformation",
                                     timeout=1.0)
        # What dynamic labels need: the Authenticate facts with host.enrolled, then the answer.
        enrolled = listener.wait_for(lambda k, b: k == "host.enrolled" and b["host_uuid"] == mac.udid)
        assert enrolled and enrolled[0][1]["facts"]["serial_number"] == mac.serial_number
        changed = listener.wait_for(lambda k, b: k == "host.facts_changed"
                                    and b["host_uuid"] == phone.udid)
        assert changed
        facts = changed[-1][1]["facts"]
        assert (facts["serial_number"], facts["os_version"], facts["product_name"],
                facts["platform"]) == (phone.serial_number, "18.1", "iPhone16,1", "ios")
    finally:
        listener.close()


def test_the_refresh_asks_only_enrolled_hosts_whose_facts_are_old(mdm, mdm_db):
    fresh, stale, gone = mdm.new_host(), mdm.new_host(), mdm.new_host()
    gone.check_out()
    with mdm_db.transaction() as conn:
        conn.execute("UPDATE hosts SET facts_requested_at = now() - interval '2 days' "
                     "WHERE uuid = ANY(%s)", ([stale.udid, gone.udid],))
    refresh = FactRefresh(mdm_db, FactRequests(CommandStore(), Outbox(MDM_ENDPOINT_OUTBOX),
                                               SecretBox(SERVER_PRIVATE_KEY)), 86400)
    assert refresh.run_once() == 1
    assert refresh.run_once() == 0  # asked now: not due again before the interval
    with mdm_db.transaction() as conn:
        asked = [r["host_uuid"] for r in conn.execute(
            "SELECT host_uuid FROM commands WHERE request_type = 'DeviceInformation' "
            "AND status = 'queued'").fetchall()]
    assert asked == [stale.udid]
    # The stale host answers (pushed): a changed fact replaces the old one.
    stale.os_version = "15.2"
    before = _facts(mdm_db, stale.udid)["facts_updated_at"]
    assert eventually(lambda: _facts(mdm_db, stale.udid)["os_version"] == "15.2")
    assert _facts(mdm_db, stale.udid)["facts_updated_at"] > before
    assert _facts(mdm_db, fresh.udid)["os_version"] == "15.1"


def test_hosts_are_listed_by_their_facts(mdm, live_admin):
    mac = mdm.new_host(model="Mac15,3", os_version="15.1")
    mdm.new_host(model="Mac14,2", os_version="14.5")
    phone = mdm.new_host(model="iPhone16,1", platform="iOS", os_version="18.1")

    def uuids(query):
        body = live_admin.get(f"{HOSTS}?{query}").json
        assert body["meta"]["total"] == len(body["hosts"])
        return sorted(h["uuid"] for h in body["hosts"]), body["meta"]["total"]

    assert uuids("product_name=Mac15%2C3")[0] == [mac.udid]
    assert uuids("platform=ios")[0] == [phone.udid]
    assert len(uuids("platform=darwin")[0]) == 2
    assert uuids("os_version=18.1&platform=darwin")[0] == []
    assert uuids("model=iPhone16%2C1")[0] == [phone.udid]
    detail = live_admin.get(f"{HOSTS}/{phone.udid}").json
    assert (detail["product_name"], detail["platform"], detail["os_version"]) == \
        ("iPhone16,1", "ios", "18.1")
    assert detail["facts_updated_at"].endswith("Z")
    for bad in ("platform=windows", f"model={'x' * 256}"):
        response = live_admin.get(f"{HOSTS}?{bad}")
        assert response.status_code == 400, bad
        assert response.json["errors"][0]["name"] in ("platform", "model")


def test_an_answer_keeps_only_short_text_facts():
    assert facts_of({"ProductName": "Mac15,3", "OSVersion": 15, "DeviceName": "x" * 256,
                     "Model": "bad\x00name", "SerialNumber": "C02X", "IMEI": "1"}).values == \
        {"product_name": "Mac15,3", "serial_number": "C02X"}
    assert facts_of("not a dictionary").values == {}


def test_the_platform_in_sql_is_the_platform_in_python(db_conn):
    names = ["Mac15,3", "iMac21,1", "VirtualMac2,1", "iPhone16,1", "iPod9,1", "iPad14,1",
             "AppleTV14,1", "", "mac15,3"]
    expected = [platform_of(n) for n in names]
    assert expected[:6] == ["darwin", "darwin", "darwin", "ios", "ios", "ipados"]
    assert set(expected[6:]) == {""}
    got = [db_conn.execute(f"SELECT {platform_sql('n.name')} AS p FROM (SELECT %s::text AS name) n",
                           (n,)).fetchone()["p"] for n in names]
    assert got == expected
    assert set(PLATFORM_PREFIXES) == {"darwin", "ios", "ipados"}
