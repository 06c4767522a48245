"""The `renewed_certificates` activity crosses services as an event: profile-processor adds
`certificates.renewed` to its outbox, its relay publishes it to admin_config.events, and
admin-config's consumer records the activity once per event, however often it is delivered;
a body that cannot be an activity is dead-lettered and records nothing."""

from __future__ import annotations

import time

import kombu
import pytest
from prometheus_client import REGISTRY

from mdmscep_common import bus, work_queues
from mdmscep_common.inbox import ADMIN_CONFIG_INBOX
from mdmscep_common.outbox import PROFILE_PROCESSOR_OUTBOX, Outbox
from tests.support.waiting import eventually, wait_for


def renewal_activities(db) -> list[dict]:
    with db.transaction() as conn:
        return conn.execute("SELECT actor, details FROM activities "
                            "WHERE type = 'renewed_certificates' ORDER BY id").fetchall()


def published(db, event_id: str) -> bool:
    with db.transaction() as conn:
        return conn.execute(f"SELECT published_at IS NOT NULL AS done FROM "
                            f"{PROFILE_PROCESSOR_OUTBOX} WHERE event_id = %s",
                            (event_id,)).fetchone()["done"]


@pytest.fixture
def announced(mdm_db):
    """Events the test adds to the processor's outbox; removed afterwards with their inbox rows."""
    added: list[str] = []

    def announce(body: dict) -> str:
        with mdm_db.transaction() as conn:
            added.append(Outbox(PROFILE_PROCESSOR_OUTBOX).add(conn, bus.CERTIFICATES_RENEWED,
                                                              body))
        return added[-1]
    yield announce
    with mdm_db.transaction() as conn:
        conn.execute(f"DELETE FROM {PROFILE_PROCESSOR_OUTBOX} WHERE event_id = ANY(%s)", (added,))
        conn.execute(f"DELETE FROM {ADMIN_CONFIG_INBOX} WHERE event_id = ANY(%s)", (added,))


def test_a_renewal_delivered_twice_is_recorded_once(mdm_db, clean_state, processor_relay,
                                                    admin_events, announced):
    duplicates = REGISTRY.get_sample_value("mdmscep_inbox_duplicates_total",
                                           {"table": ADMIN_CONFIG_INBOX}) or 0.0
    event_id = announced({"hosts": 3, "profile_uuids": ["P-1", "P-2"]})
    [activity] = wait_for(lambda: renewal_activities(mdm_db), what="the activity")
    assert activity == {"actor": "profile-processor",
                        "details": {"hosts": 3, "profile_uuids": ["P-1", "P-2"]}}
    wait_for(lambda: published(mdm_db, event_id), what="the event marked published")

    # A relay stopped between the broker's confirm and its commit publishes the row again.
    with mdm_db.transaction() as conn:
        conn.execute(f"UPDATE {PROFILE_PROCESSOR_OUTBOX} SET published_at = NULL "
                     "WHERE event_id = %s", (event_id,))
    wait_for(lambda: published(mdm_db, event_id), what="the event published again")
    assert eventually(lambda: (REGISTRY.get_sample_value(
        "mdmscep_inbox_duplicates_total", {"table": ADMIN_CONFIG_INBOX}) or 0.0) == duplicates + 1)
    time.sleep(0.3)
    assert len(renewal_activities(mdm_db)) == 1


def test_a_renewal_that_cannot_be_an_activity_is_dead_lettered(mdm_db, amqp_url, clean_state,
                                                               processor_relay, admin_events,
                                                               announced):
    dead_letters = bus.dead_letter_queue_name(work_queues.ADMIN_CONFIG_EVENTS)
    with kombu.Connection(amqp_url) as conn, conn.channel() as channel:
        kombu.Queue(dead_letters, channel=channel, no_declare=True).purge()
    announced({"hosts": 0, "profile_uuids": ["P-1"]})
    announced({"hosts": 2, "profile_uuids": "P-1"})
    announced({"hosts": 1, "profile_uuids": ["P-3"]})  # a good one after them is handled

    [activity] = wait_for(lambda: renewal_activities(mdm_db), what="the good activity")
    assert activity["details"] == {"hosts": 1, "profile_uuids": ["P-3"]}

    def dead_lettered() -> int:
        with kombu.Connection(amqp_url) as conn, conn.channel() as channel:
            return channel.queue_declare(dead_letters, passive=True).message_count
    assert eventually(lambda: dead_lettered() == 2)
    assert len(renewal_activities(mdm_db)) == 1
