"""Delivery pacing per CA across processor replicas, and the CA's own failures counted as attempts
(scep.result), against the real database, bus and processor."""

from __future__ import annotations

from mdmscep_common import bus
from tests.admin_config.test_configuration_profiles import upload
from tests.profile_processor.test_profile_delivery import (
    SEED,
    SPECIAL_CHALLENGE,
    installs,
    statuses,
    wait_for,
)
from tests.support.service_fixtures import create_ca


def _asleep(mdm, host):
    mdm.fleet._by_token.pop(host.push_token.hex())  # ignores pushes: deliveries stay pending


def _delivering_to_a_sleeping_host(mdm, live_admin, custom_ca, start_processor, **env):
    """One processor, one host that ignores pushes, the seed profile on its way to it."""
    start_processor(**env)
    host = mdm.new_host()
    _asleep(mdm, host)
    assert create_ca(live_admin, "Test_SCEP", custom_ca.url, SPECIAL_CHALLENGE).status_code == 200
    return host, upload(live_admin, SEED).json["profile_uuid"]


def test_sends_are_paced_to_the_cas_issuance_rate(mdm, mdm_db, live_admin, custom_ca,
                                                   start_processor):
    start_processor()
    start_processor()  # two replicas share the CA's pace
    hosts = [mdm.new_host() for _ in range(5)]
    for host in hosts:
        _asleep(mdm, host)
    created = live_admin.post("/api/v1/fleet/certificate_authorities", json={"custom_scep_proxy": {
        "name": "Test_SCEP", "url": custom_ca.url, "challenge": "c",
        "max_issuance_per_second": 2}})
    assert created.status_code == 200
    profile_uuid = upload(live_admin, SEED).json["profile_uuid"]

    def sent_times():
        with mdm_db.transaction() as conn:
            return sorted(r["created_at"] for r in conn.execute(
                "SELECT created_at FROM commands WHERE request_type = 'InstallProfile'").fetchall())
    def detail(host):
        return statuses(live_admin, host).get(profile_uuid, {}).get("detail", "")
    waiting = wait_for(lambda: [h for h in hosts if "Waiting for its turn at certificate authority "
                                "Test_SCEP" in detail(h)], what="a paced host", timeout=10)
    assert waiting
    times = wait_for(lambda: len(sent_times()) == 5 and sent_times(), what="all sent", timeout=15)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # 5 slots at 2/s span 2 s. The first send leaves at the end of the pass that reserved the
    # slots, the others on their slot's wake-up, so under load the first gap is short by the
    # pass's length (0.25 s seen in CI); unpaced, the span would be about 0.
    assert sum(gaps) >= 1.5, gaps
    stats = live_admin.get(f"/api/v1/fleet/certificate_authorities/{created.json['id']}/stats").json
    assert stats["waiting"] == 0


def test_a_ca_refusal_uses_an_attempt_and_is_in_the_final_detail(mdm, mdm_db, live_admin, amqp_url,
                                                                  custom_ca, start_processor):
    host, profile_uuid = _delivering_to_a_sleeping_host(mdm, live_admin, custom_ca, start_processor)
    wait_for(lambda: statuses(live_admin, host).get(profile_uuid, {}).get("status") == "pending"
             and len(_commands(mdm_db, host)) == 1, what="first send")
    publisher = bus.Publisher(amqp_url)
    refusal = {"host_uuid": host.udid, "profile_uuid": profile_uuid, "ca_name": "Test_SCEP",
               "outcome": "scep_failure", "fail_info": "badRequest", "http_status": 200,
               "detail": "pkiStatus FAILURE"}
    for attempt in (1, 2, 3):
        wait_for(lambda a=attempt: len(_commands(mdm_db, host)) == a, what=f"attempt {attempt}")
        publisher.publish(bus.SCEP_RESULT, refusal)
        if attempt < 3:
            wait_for(lambda a=attempt: f"Attempt {a} of 3 failed" in
                     statuses(live_admin, host)[profile_uuid]["detail"], what="retry detail")
    row = wait_for(lambda: statuses(live_admin, host)[profile_uuid]["status"] == "failed"
                   and statuses(live_admin, host)[profile_uuid], what="failed")
    assert "failInfo badRequest" in row["detail"] and "Test_SCEP" in row["detail"]
    publisher.close()
    assert installs(host) == []  # the host never polled: only the CA answered


def _commands(mdm_db, host):
    with mdm_db.transaction() as conn:
        return conn.execute("SELECT command_uuid FROM commands WHERE host_uuid = %s "
                            "AND request_type = 'InstallProfile' ORDER BY seq",
                            (host.udid,)).fetchall()


def test_an_unreachable_ca_gives_the_attempt_back(mdm, mdm_db, live_admin, amqp_url, custom_ca,
                                                  start_processor):
    """No HTTP answer from the CA (`ca_unreachable`): the attempt does not count, whichever of the
    CA's event and the host's Error comes first, and a redelivered event gives it back once."""
    # The outage backoff doubles from PROFILE_RETRY_BACKOFF for each give-back.
    host, profile_uuid = _delivering_to_a_sleeping_host(mdm, live_admin, custom_ca, start_processor,
                                                        PROFILE_RETRY_BACKOFF="0.05")
    publisher = bus.Publisher(amqp_url)
    down = _ca_down(host, profile_uuid)

    def delivery():
        return _delivery(mdm_db, host, profile_uuid)

    # Five outages in a row: more than the 3 attempts a host has, and still pending.
    for outage in range(1, 6):
        code = _code_of(mdm_db, _sent(mdm_db, host, profile_uuid, outage))
        publisher.publish(bus.SCEP_RESULT, {**down, "code_sha256": code})
        publisher.publish(bus.SCEP_RESULT, {**down, "code_sha256": code})  # redelivered
        row = wait_for(lambda o=outage: (r := delivery())["ca_unreachable_retries"] == o and r,
                       what="given back")
        # 0, or 1 once the re-send (0.05 s later and up) went out: never counting up to 3.
        assert row["status"] == "pending" and row["attempts"] <= 1, row
        assert "does not use up the host's attempts" in row["detail"]
    assert delivery()["ca_unreachable_retries"] == 5  # the redelivered events changed nothing

    # The host's own Error for an attempt the CA already explained changes nothing either; an
    # event about an older attempt is ignored.
    current = _sent(mdm_db, host, profile_uuid, 6)
    publisher.publish(bus.SCEP_RESULT, {**down, "code_sha256": _code_of(
        mdm_db, _commands(mdm_db, host)[0]["command_uuid"])})
    publisher.publish(bus.SCEP_RESULT, {**down, "code_sha256": _code_of(mdm_db, current)})
    wait_for(lambda: delivery()["ca_unreachable_retries"] == 6, what="sixth give-back")
    _host_error(host, current)
    # The next send is 1.6 s away: the host's Error is handled well before it.
    # (The Commander queues the command before the processor commits the send: wait for both.)
    wait_for(lambda: len(_commands(mdm_db, host)) == 7, what="send 7")
    row = wait_for(lambda: (r := delivery())["attempts"] == 1 and r, what="send 7 committed")
    assert row["ca_unreachable_retries"] == 6, row
    assert "does not use up the host's attempts" in row["detail"] and "SCEP server" not in \
        row["detail"]

    # A CA that answers (here: refuses) uses the attempt as before.
    publisher.publish(bus.SCEP_RESULT, {**down, "ca_unreachable": False, "http_status": 502,
                                        "detail": "the CA answered HTTP 500"})
    wait_for(lambda: "Attempt 1 of 3 failed" in delivery()["detail"], what="counted attempt")
    publisher.close()


def test_an_unreachable_ca_revives_an_attempt_the_host_reported_first(
        mdm, mdm_db, live_admin, amqp_url, custom_ca, start_processor):
    """The host's Error can reach the processor before the proxy's event: the attempt is counted,
    then given back, even the third one that had ended the delivery `failed`."""
    host, profile_uuid = _delivering_to_a_sleeping_host(mdm, live_admin, custom_ca, start_processor)
    publisher = bus.Publisher(amqp_url)
    for attempt in (1, 2, 3):
        _host_error(host, _sent(mdm_db, host, profile_uuid, attempt))
        if attempt < 3:
            wait_for(lambda a=attempt: f"Attempt {a} of 3 failed" in
                     _delivery(mdm_db, host, profile_uuid)["detail"], what="counted")
    failed = wait_for(lambda: (r := _delivery(mdm_db, host, profile_uuid))["status"] == "failed"
                      and r, what="failed")
    assert failed["attempts"] == 3
    # Now the proxy's event for that third attempt: the CA was down, so it is given back.
    publisher.publish(bus.SCEP_RESULT, {**_ca_down(host, profile_uuid),
                                        "code_sha256": _code_of(mdm_db, failed["command_uuid"])})
    # Given back (3 → 2), then sent again (→ 3): a fourth InstallProfile, still pending.
    row = wait_for(lambda: (r := _delivery(mdm_db, host, profile_uuid))["ca_unreachable_retries"]
                   == 1 and r["attempts"] == 3 and r, what="sent again after the revival")
    assert row["status"] == "pending" and len(_commands(mdm_db, host)) == 4, row
    publisher.close()


def _sent(mdm_db, host, profile_uuid, n):
    """The n-th InstallProfile's command, once the processor committed it as the current one
    (the Commander queues it before that commit)."""
    def current():
        commands = _commands(mdm_db, host)
        return len(commands) == n and \
            _delivery(mdm_db, host, profile_uuid)["command_uuid"] == commands[-1]["command_uuid"] \
            and commands[-1]["command_uuid"]
    return wait_for(current, what=f"send {n}")


def _ca_down(host, profile_uuid):
    return {"host_uuid": host.udid, "profile_uuid": profile_uuid, "ca_name": "Test_SCEP",
            "outcome": "upstream_error", "fail_info": "", "http_status": 502,
            "detail": "the CA is unreachable (connection refused)", "ca_unreachable": True}


def _host_error(host, command_uuid):
    host.connect({"CommandUUID": command_uuid, "Status": "Error", "ErrorChain": [
        {"ErrorCode": 22013, "ErrorDomain": "MCSCEPErrorDomain",
         "USEnglishDescription": "The SCEP server returned an invalid response."}]})


def _delivery(mdm_db, host, profile_uuid):
    with mdm_db.transaction() as conn:
        return conn.execute(
            "SELECT status, attempts, ca_unreachable_retries, command_uuid, detail "
            "FROM host_profiles WHERE host_uuid = %s AND profile_uuid = %s",
            (host.udid, profile_uuid)).fetchone()


def _code_of(mdm_db, command_uuid):
    with mdm_db.transaction() as conn:
        return conn.execute("SELECT encode(code_sha256, 'hex') AS h FROM scep_codes "
                            "WHERE command_uuid = %s", (command_uuid,)).fetchone()["h"]
