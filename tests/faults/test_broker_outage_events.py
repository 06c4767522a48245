"""A host's answer that arrives while RabbitMQ is down is not lost.

mdm-endpoint publishes `command.result` after it stored the answer. With the broker down longer
than the publisher's own retries (about 6 s), the event used to be dropped after a log line, and
the delivery then waited for the processor's re-send after SCEP_CODE_TTL (an hour by default)
although the host had acknowledged it. Now a failed publish is kept and published again from the
background as soon as the broker is back, in order, and while events wait, new ones queue behind
them instead of blocking each request for the publisher's retries.

A private RabbitMQ node (tests/support/private_services.py) is stopped and started for real; the
MDM endpoint runs in-process on the test database (rolled back)."""

from __future__ import annotations

import plistlib
import threading
import time
import uuid

import kombu
import pytest

from mdm_endpoint.app import create_app
from mdm_endpoint.identity import IdentityVerifier
from mdm_endpoint.store import CommandStore
from mdmscep_common import bus
from mdmscep_common.crypto import SecretBox
from mdmscep_common.health import HealthChecks
from mdmscep_common.mdm_commands import profile_list
from mdmscep_common.settings import load_settings
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.identity_pki import IdentityCa
from tests.support.private_services import start_private_rabbitmq

pytestmark = pytest.mark.slow
UDID = "C0FFEE00-0000-4000-8000-0000000000AA"


@pytest.fixture(scope="module")
def rabbit():
    node = start_private_rabbitmq("mdmscepevents")
    yield node
    node.close()


def _send(client, identity, message):
    body = plistlib.dumps(message)
    return client.put("/mdm/connect" if "Status" in message else "/mdm/checkin", data=body,
                      headers={"Mdm-Signature": identity.sign(body)})


def test_a_result_sent_while_the_broker_is_down_is_published_when_it_is_back(rabbit, db):
    ca = IdentityCa()
    identity = ca.issue("host")
    # A queue that collects command.result, as the processor's would.
    watch = kombu.Queue(f"watch-{uuid.uuid4().hex[:8]}", exchange=bus.EXCHANGE,
                        routing_key=bus.COMMAND_RESULT, durable=True)
    with kombu.Connection(rabbit.amqp_url) as conn:
        watch(conn.channel()).declare()
    publisher = bus.Publisher(rabbit.amqp_url)
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY})
    app = create_app(settings, db, publisher, HealthChecks({}),
                     verifier=IdentityVerifier([ca.certificate]))
    client = app.test_client()
    assert _send(client, identity, {"MessageType": "Authenticate", "UDID": UDID,
                                    "Topic": "t"}).status_code == 200
    assert _send(client, identity, {"MessageType": "TokenUpdate", "UDID": UDID, "Topic": "t",
                                    "Token": b"\x01" * 32, "PushMagic": "m"}).status_code == 200
    commands = [str(uuid.uuid4()).upper() for _ in range(3)]
    with db.transaction() as conn:
        CommandStore().enqueue(conn, [(UDID, c, "ProfileList", profile_list(c)) for c in commands],
                               [])
    rabbit.stop()
    try:
        # The host works through its queue while the broker is away.
        answer = _send(client, identity, {"Status": "Idle", "UDID": UDID})
        started = time.monotonic()
        for command_uuid in commands:
            assert plistlib.loads(answer.data)["CommandUUID"] == command_uuid
            answer = _send(client, identity, {"Status": "Acknowledged", "UDID": UDID,
                                              "CommandUUID": command_uuid, "ProfileList": []})
            assert answer.status_code == 200
        answered_in = time.monotonic() - started
    finally:
        restart = threading.Thread(target=rabbit.start)
        restart.start()
    restart.join(180)
    received = []
    deadline = time.monotonic() + 60
    with kombu.Connection(rabbit.amqp_url) as conn:
        channel = conn.channel()
        while len(received) < len(commands) and time.monotonic() < deadline:
            message = watch(channel).get(no_ack=True)
            if message is None:
                time.sleep(0.2)
                continue
            received.append(message.payload["command_uuid"])
    publisher.close()
    assert received == commands  # every result, in order
    # The first failed publish waits for the publisher's retries; the others queue behind it.
    assert answered_in < 20, answered_in


def test_the_commander_queues_while_the_broker_is_down_and_pushes_when_it_is_back(rabbit, db):
    """Commands are committed first; a push.requested the broker cannot take is kept instead of
    failing the call (the processor then re-sent with new commands while these stayed queued
    with one-time codes it never stored: the host met 'unknown one-time code' first)."""
    from mdm_endpoint.commander import Commander

    watch = kombu.Queue(f"pushes-{uuid.uuid4().hex[:8]}", exchange=bus.EXCHANGE,
                        routing_key=bus.PUSH_REQUESTED, durable=True)
    with kombu.Connection(rabbit.amqp_url) as conn:
        watch(conn.channel()).declare()
    with db.transaction() as conn:
        conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true) ON CONFLICT DO NOTHING",
                     ("C0FFEE00-0000-4000-8000-0000000000BB",))
    publisher = bus.Publisher(rabbit.amqp_url)
    commander = Commander(db, CommandStore(), publisher, SecretBox(SERVER_PRIVATE_KEY))
    command = str(uuid.uuid4()).upper()
    rabbit.stop()
    try:
        queued, pushed = commander.enqueue(
            [("C0FFEE00-0000-4000-8000-0000000000BB", command, "ProfileList", profile_list(command))],
            [])
        assert (queued, pushed) == (1, 1)  # no exception: the processor commits its side
    finally:
        rabbit.start()
    deadline, message = time.monotonic() + 60, None
    with kombu.Connection(rabbit.amqp_url) as conn:
        while message is None and time.monotonic() < deadline:
            message = watch(conn.channel()).get(no_ack=True)
            time.sleep(0.2)
    publisher.close()
    assert message is not None and message.payload["host_uuids"] == [
        "C0FFEE00-0000-4000-8000-0000000000BB"]
