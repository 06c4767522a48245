"""What happens while RabbitMQ is unreachable: every event is kept, and arrives exactly once when it
is back, without waiting for the processor's periodic reconcile pass.

The stack started by `make run`'s launcher (its own database and vhost) reaches the shared
RabbitMQ through a TCP relay the test takes down (tests/support/outage_proxy.py), so the broker
other test runs use keeps running. While it is down: an admin uploads a profile and asks for a
re-send (both answered at once), a host answers its InstallProfile (a delivery result) after
getting its certificate through the SCEP proxy (a SCEP result). Each service adds those events to
its outbox in the same transaction as the change; when the broker is back the relays publish
them, and the processor handles each once (its inbox), as the deliveries show.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

import kombu
import psycopg
import pytest

from hostsim.device import SimulatedHost
from mdmscep_common import bus, work_queues
from tests.conftest import AMQP_BASE, RUN_ID
from tests.faults.harness import CA_NAME, scenario_profile
from tests.support.outage_proxy import OutageProxy
from tests.support.waiting import wait_for
from tests.support.world import ENROLL_SECRET, running_world

pytestmark = pytest.mark.slow

NAME = "outbox"
CHALLENGE = "outbox-ca-challenge-4Rt"
OUTAGE_SECONDS = 4.0
OUTBOXES = ("admin_config_outbox", "mdm_endpoint_outbox", "scep_proxy_outbox")
# The routing keys bound to profile_processor.events.
TO_PROCESSOR = {b.routing_key for b in work_queues.profile_processor_events().bindings}
PLAIN_PROFILE = (b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
                 b"<key>PayloadContent</key><array/><key>PayloadIdentifier</key>"
                 b"<string>com.example.outbox.plain</string><key>PayloadType</key>"
                 b"<string>Configuration</string><key>PayloadUUID</key><string>"
                 + str(uuid.uuid4()).upper().encode()
                 + b"</string><key>PayloadVersion</key><integer>1</integer></dict></plist>")


def rows(dsn: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def outbox_events(dsn: str) -> list[tuple[str, str, bool]]:
    """(event id, routing key, published) of every event the services added."""
    return [(str(event_id), key, published is not None)
            for table in OUTBOXES
            for event_id, key, published in rows(
                dsn, f"SELECT event_id, routing_key, published_at FROM {table}")]


def delivery(dsn: str, host: str, profile: str) -> tuple[str, str] | None:
    found = rows(dsn, "SELECT status, command_uuid FROM host_profiles "
                      "WHERE host_uuid = %s AND profile_uuid = %s", host, profile)
    return found[0] if found else None


def commands(dsn: str, host: str) -> dict[str, int]:
    """The processor's commands for the host, by type (not mdm-endpoint's own facts question)."""
    return dict(rows(dsn, "SELECT request_type, count(*) FROM commands WHERE host_uuid = %s "
                          "AND request_type <> 'DeviceInformation' GROUP BY request_type", host))


def test_events_made_while_the_broker_is_unreachable_arrive_once_when_it_is_back(base_env,
                                                                                 tmp_path):
    broker = OutageProxy(urlsplit(AMQP_BASE).port)
    vhost = f"mdmscep_test_{RUN_ID}_{NAME}"  # running_world's vhost for NAME
    credentials = urlsplit(AMQP_BASE).netloc.rpartition("@")[0]
    try:
        with running_world(base_env, tmp_path, NAME, {"ca": (CHALLENGE, "Outbox CA")},
                           AMQP_URL=f"amqp://{credentials}@127.0.0.1:{broker.port}/{vhost}",
                           PROFILE_RECONCILE_INTERVAL="3600", HTTP_WORKERS="1") as world:
            _scenario(world, broker, f"{AMQP_BASE}/{vhost}")
    finally:
        broker.close()


def _scenario(world, broker: OutageProxy, direct_amqp_url: str) -> None:
    dsn, admin = world.stack.env["DATABASE_URL"], world.admin.http
    created = admin.post("/certificate_authorities", json={"custom_scep_proxy": {
        "name": CA_NAME, "url": world.cas["ca"].url, "challenge": CHALLENGE}})
    assert created.status_code == 200, created.text
    # Two hosts outside the fleet: pushes do not wake them, the test polls them itself.
    answering, waiting = (SimulatedHost(world.stack.url("MDM_HTTP_PORT"),
                                        workdir=world.root / "hosts") for _ in range(2))
    for host in (answering, waiting):
        host.enroll(ENROLL_SECRET)
    raw, identifier = scenario_profile("OUTBOX")
    upload = admin.post("/configuration_profiles", files={"profile": ("scep.mobileconfig", raw)})
    assert upload.status_code == 200, upload.text
    scep_profile = upload.json()["profile_uuid"]
    wait_for(lambda: all(commands(dsn, h.udid).get("InstallProfile") for h in (answering, waiting)),
             20, "the SCEP profile queued for both hosts")
    _, first_command = delivery(dsn, waiting.udid, scep_profile)
    wait_for(lambda: all(published for *_, published in outbox_events(dsn)), 20,
             "every event so far published")
    before = {event_id for event_id, *_ in outbox_events(dsn)}

    # --- the broker unreachable -------------------------------------------------------------
    broker.refuse()
    down_at = time.monotonic()
    handled = answering.poll()  # InstallProfile: SCEP through the proxy, then Acknowledged
    # (and, if the host had not checked in since it enrolled, its facts question before it)
    assert [(kind, status) for kind, _, status in handled if kind != "DeviceInformation"] == \
        [("InstallProfile", "Acknowledged")]
    assert answering.profiles[identifier].certificates, "the certificate, through the proxy"
    assert time.monotonic() - down_at < 15, "a host's requests never wait on the broker"
    plain = admin.post("/configuration_profiles",
                       files={"profile": ("plain.mobileconfig", PLAIN_PROFILE)})
    assert plain.status_code == 200, plain.text
    plain_profile = plain.json()["profile_uuid"]
    resend = admin.post(f"/hosts/{waiting.udid}/configuration_profiles/{scep_profile}/resend")
    assert resend.status_code == 202, resend.text  # no longer a 500 while the broker is away
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    made = [(event_id, key) for event_id, key, published in outbox_events(dsn)
            if event_id not in before]
    # (host.facts_changed too when the host answered its facts question only now)
    assert sorted(key for _, key in made if key != bus.HOST_FACTS_CHANGED) == sorted([
        bus.SCEP_RESULT, bus.COMMAND_RESULT, bus.CONFIG_CHANGED, bus.DELIVERY_RESEND])
    assert not any(published for event_id, _, published in outbox_events(dsn)
                   if event_id not in before), "nothing went out while the broker was away"
    assert delivery(dsn, answering.udid, scep_profile)[0] == "pending"  # result not handled yet
    assert delivery(dsn, waiting.udid, plain_profile) is None  # upload not seen yet

    # --- back ------------------------------------------------------------------------------
    broker.restore()
    back_at = time.monotonic()
    wait_for(lambda: (delivery(dsn, answering.udid, scep_profile) or ("",))[0] == "verifying",
             40, "the host's result handled (verifying)")
    wait_for(lambda: all(delivery(dsn, h.udid, plain_profile) for h in (answering, waiting)),
             40, "the upload handled (a delivery per host)")
    wait_for(lambda: delivery(dsn, waiting.udid, scep_profile)[1] != first_command, 40,
             "the re-send handled (a new InstallProfile)")
    wait_for(lambda: all(published for *_, published in outbox_events(dsn)), 20,
             "every event published")
    recovered_in = time.monotonic() - back_at
    time.sleep(1.5)  # anything handled twice would show by now

    # Exactly once: every event for the processor is in its inbox, each once (primary key), and
    # the deliveries moved once each.
    to_processor = {event_id for event_id, key, _ in outbox_events(dsn) if key in TO_PROCESSOR}
    inbox = {str(event_id) for (event_id,) in rows(dsn, "SELECT event_id FROM "
                                                        "profile_processor_inbox")}
    assert to_processor <= inbox
    assert {event_id for event_id, _ in made} <= inbox
    assert commands(dsn, answering.udid) == {"InstallProfile": 2, "ProfileList": 1,
                                             "CertificateList": 1}
    assert commands(dsn, waiting.udid) == {"InstallProfile": 3}  # SCEP, its re-send, plain
    with kombu.Connection(direct_amqp_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in (work_queues.PROFILE_PROCESSOR_EVENTS,
                      bus.dead_letter_queue_name(work_queues.PROFILE_PROCESSOR_EVENTS)):
            _, ready, _ = channel.queue_declare(queue, passive=True)
            assert ready == 0, queue
    assert recovered_in < 30, recovered_in
