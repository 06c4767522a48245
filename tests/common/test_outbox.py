"""The transactional outbox, its relay (mdmscep_common.outbox) and the consumers' inbox
(mdmscep_common.inbox) on the test database and RabbitMQ.

- An event added in a transaction that rolls back is never published; a committed one is
  published once, persistent, with its event id as message_id and in the body, even with two
  relays on the table; NOTIFY wakes a relay at once.
- While the broker is away (a relay in front of the shared RabbitMQ, taken down) the rows wait,
  and go out in order when it is back; the same when the relay loses PostgreSQL (a relay in front
  of the shared server), and its metrics tell the backlog.
- A consumer records each event id in its inbox with its work: a message delivered twice is
  handled once, and work that failed leaves no record, so its redelivery is handled.
- Published rows are pruned after a day, never unpublished ones.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest
from prometheus_client import REGISTRY

from mdmscep_common import bus
from mdmscep_common.db import Database
from mdmscep_common.inbox import PROFILE_PROCESSOR_INBOX, Inbox, event_id_of, first_delivery
from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, Outbox, OutboxRelay, published_rule
from mdmscep_common.retention import Pruner
from tests.support.consuming import consume_in_thread
from tests.support.outage_proxy import OutageProxy
from tests.support.waiting import eventually, wait_for

TABLE = ADMIN_CONFIG_OUTBOX


def through(url: str, proxy: OutageProxy) -> str:
    """`url` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Watch:
    """A queue of the test's own, bound to its routing key: what the relays published."""

    def __init__(self, amqp_url: str, key: str):
        self._conn = kombu.Connection(amqp_url)
        channel = self._conn.channel()
        bus.EXCHANGE(channel).declare()
        self._queue = kombu.Queue(f"watch.{key}", exchange=bus.EXCHANGE, routing_key=key,
                                  durable=False)(channel)
        self._queue.declare()
        self.messages: list[kombu.Message] = []

    def collect(self, count: int, timeout: float = 10.0) -> list[kombu.Message]:
        """What arrived, once `count` messages did or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            message = self._queue.get(no_ack=True, accept=["json"])
            if message is None:
                time.sleep(0.05)
                continue
            self.messages.append(message)
        return self.messages

    def close(self) -> None:
        self._queue.delete()
        self._conn.release()


@pytest.fixture
def pool(database_url):
    db = Database(database_url, max_size=4, name="tests-outbox").open()
    yield db
    db.close()


@pytest.fixture
def key(pool):
    key = f"test.outbox.{uuid.uuid4().hex[:10]}"
    yield key
    with pool.transaction() as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE routing_key = %s", (key,))


@pytest.fixture
def watch(amqp_url, key):
    watch = Watch(amqp_url, key)
    yield watch
    watch.close()


@pytest.fixture
def start_relay(pool, amqp_url, database_url):
    started = []

    def start(db=None, amqp=amqp_url, dsn=database_url, **kw) -> OutboxRelay:
        options = {"poll_interval": 0.2, "max_backoff": 0.5, "measure_interval": 0.1, **kw}
        relay = OutboxRelay(db or pool, TABLE, amqp, dsn, **options).start()
        started.append(relay)
        return relay
    yield start
    for relay in started:
        relay.stop()


def add(db, key: str, n) -> str:
    with db.transaction() as conn:
        return Outbox(TABLE).add(conn, key, {"n": n})


def unpublished(db, event_ids: list[str]) -> set[str]:
    with db.transaction() as conn:
        rows = conn.execute(f"SELECT event_id::text AS id FROM {TABLE} WHERE event_id = ANY(%s) "
                            "AND published_at IS NULL", (event_ids,)).fetchall()
    return {row["id"] for row in rows}


# --- the outbox and its relay --------------------------------------------------------------

def test_only_committed_events_are_published_each_once(pool, key, watch, start_relay):
    with pytest.raises(RuntimeError), pool.transaction() as conn:
        Outbox(TABLE).add(conn, key, {"n": "rolled back"})
        raise RuntimeError("the change fails: its event goes with it")
    committed = add(pool, key, "committed")
    start_relay()
    [message] = watch.collect(1)
    # The row's id travels as the sequence (the order of one row's events).
    assert message.payload == {"n": "committed", "event_id": committed,
                               "sequence": message.payload["sequence"]}
    assert isinstance(message.payload["sequence"], int)
    assert message.properties["message_id"] == committed
    assert message.properties["delivery_mode"] == 2  # persistent
    assert wait_for(lambda: not unpublished(pool, [committed]), 5, "the row marked published")
    assert len(watch.collect(2, timeout=1.0)) == 1  # nothing else: the rolled-back one never
    with pool.transaction() as conn:
        rows = conn.execute(f"SELECT body FROM {TABLE} WHERE routing_key = %s", (key,)).fetchall()
    assert [row["body"] for row in rows] == [{"n": "committed"}]


def test_two_relays_publish_each_event_once(pool, key, watch, start_relay):
    added = [add(pool, key, n) for n in range(60)]
    start_relay(batch_size=7)
    start_relay(batch_size=7)
    got = watch.collect(60, timeout=20)
    watch.collect(61, timeout=1.0)  # and nothing more
    assert sorted(m.payload["event_id"] for m in got) == sorted(added)
    assert not unpublished(pool, added)


def test_a_notification_wakes_the_relay_at_once(pool, key, watch, start_relay):
    start_relay(poll_interval=60.0)
    time.sleep(0.5)  # drained: waiting for a notification (or a minute)
    added = time.monotonic()
    event_id = add(pool, key, "notified")
    [message] = watch.collect(1, timeout=5)
    assert message.payload["event_id"] == event_id
    assert time.monotonic() - added < 2


def test_events_wait_while_the_broker_is_away_then_go_out_in_order(pool, amqp_url, key, watch,
                                                                   start_relay):
    broker = OutageProxy(urlsplit(amqp_url).port)
    try:
        start_relay(amqp=through(amqp_url, broker))
        first = add(pool, key, 0)
        assert watch.collect(1)[0].payload["event_id"] == first
        failures = metric("mdmscep_outbox_relay_failures_total", table=TABLE, dependency="broker")
        broker.refuse()
        waiting = [add(pool, key, n) for n in range(1, 6)]
        assert eventually(lambda: metric("mdmscep_outbox_relay_failures_total", table=TABLE,
                                         dependency="broker") > failures, 5)
        time.sleep(0.5)
        assert unpublished(pool, waiting) == set(waiting)  # nothing lost, nothing sent
        assert len(watch.collect(2, timeout=0.2)) == 1
        assert eventually(lambda: metric("mdmscep_outbox_unpublished", table=TABLE) >= 5, 5)
        assert metric("mdmscep_outbox_oldest_unpublished_age_seconds", table=TABLE) > 0
        broker.restore()
        got = watch.collect(6, timeout=15)
        assert [m.payload["n"] for m in got] == [0, 1, 2, 3, 4, 5]
        # The relay marks rows published once the broker has confirmed them: a consumer may
        # hold the messages a moment before that commit.
        assert wait_for(lambda: not unpublished(pool, waiting), 5, "the rows marked published")
        assert eventually(lambda: metric("mdmscep_outbox_unpublished", table=TABLE) == 0, 5)
    finally:
        broker.close()


# Slow: after the cut psycopg_pool retries its connections 1, 2, 4... s apart, so the relay
# resumes up to 10 s after PostgreSQL is back (as in production).
@pytest.mark.slow
def test_the_relay_outlives_its_database_going_away(pool, database_url, key, watch, start_relay):
    postgres = OutageProxy(urlsplit(database_url).port)
    relay_db = Database(through(database_url, postgres), max_size=2, name="tests-relay").open()
    try:
        start_relay(db=relay_db, dsn=through(database_url, postgres))
        before = add(pool, key, "before")
        assert watch.collect(1)[0].payload["event_id"] == before
        # Marked published before the cut (else it is published again after: at least once).
        assert eventually(lambda: not unpublished(pool, [before]), 10), "before marked published"
        postgres.refuse()  # every connection of the relay cut, new ones refused
        during = [add(pool, key, n) for n in ("during-1", "during-2")]
        time.sleep(1.0)
        assert unpublished(pool, during) == set(during)
        postgres.restore()
        got = watch.collect(3, timeout=20)
        assert [m.payload["n"] for m in got] == ["before", "during-1", "during-2"]
    finally:
        postgres.close()
        relay_db.close()


def test_published_rows_are_pruned_after_a_day_unpublished_ones_never(db, db_conn):
    rows = {}
    for name, created, published in (("old published", "3 days", "3 days"),
                                     ("new published", "1 hour", "1 hour"),
                                     ("old unpublished", "3 days", None)):
        rows[name] = db_conn.execute(
            f"INSERT INTO {TABLE} (event_id, routing_key, body, created_at, published_at) "
            "VALUES (gen_random_uuid(), 'test.prune', '{}', now() - %s::interval, "
            "now() - %s::interval) RETURNING id", (created, published)).fetchone()["id"]
    Pruner(db).prune(published_rule(TABLE))
    left = {r["id"] for r in db_conn.execute(f"SELECT id FROM {TABLE} WHERE id = ANY(%s)",
                                             (list(rows.values()),)).fetchall()}
    assert left == {rows["new published"], rows["old unpublished"]}


# --- the inbox -----------------------------------------------------------------------------

def test_an_event_is_recorded_once_in_the_inbox(db_conn):
    event_id = str(uuid.uuid4())
    assert first_delivery(db_conn, PROFILE_PROCESSOR_INBOX, event_id) is True
    assert first_delivery(db_conn, PROFILE_PROCESSOR_INBOX, event_id) is False
    assert event_id_of({"host_uuid": "H"}) is None  # published before the outboxes
    for malformed in ("not-a-uuid", 42, ""):
        with pytest.raises(bus.PoisonMessage):
            event_id_of({"event_id": malformed})


def test_a_redelivered_event_is_handled_once_and_failed_work_again(pool, amqp_url):
    routing_key = f"test.inbox.{uuid.uuid4().hex[:10]}"
    queue = bus.durable_queue(routing_key, [routing_key])
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
    inbox = Inbox(pool, PROFILE_PROCESSOR_INBOX)
    handled: list[str] = []
    failed: list[str] = []

    def work(tx, body):
        with tx.transaction() as conn:  # the work's own transaction joins the inbox's
            conn.execute("SELECT 1")
        if body["n"] == "flaky" and not failed:
            failed.append(body["n"])
            raise RuntimeError("the first try fails: its inbox record goes with it")
        handled.append(body["n"])

    worker = bus.Worker(amqp_url, {queue.name: (queue, lambda body, _d: inbox.handle(
        body, lambda tx: work(tx, body)))}, prefetch=1, requeue_pause=0.05)
    thread = consume_in_thread(worker)
    once, flaky = str(uuid.uuid4()), str(uuid.uuid4())
    duplicates = metric("mdmscep_inbox_duplicates_total", table=PROFILE_PROCESSOR_INBOX)
    publisher = bus.Publisher(amqp_url)
    try:
        for body in ({"n": "once", "event_id": once}, {"n": "once", "event_id": once},
                     {"n": "flaky", "event_id": flaky}, {"n": "old"}, {"n": "old"}):
            publisher.publish(routing_key, body, message_id=body.get("event_id"))
        assert eventually(lambda: len(handled) == 4, 15), handled
        time.sleep(0.5)
        assert sorted(handled) == ["flaky", "old", "old", "once"]
        assert failed == ["flaky"]
        assert metric("mdmscep_inbox_duplicates_total",
                      table=PROFILE_PROCESSOR_INBOX) == duplicates + 1
        with pool.transaction() as conn:
            recorded = conn.execute(f"SELECT count(*) AS n FROM {PROFILE_PROCESSOR_INBOX} "
                                    "WHERE event_id = ANY(%s)", ([once, flaky],)).fetchone()["n"]
        assert recorded == 2
    finally:
        worker.stop()
        thread.join(10)
        publisher.close()
        with bus.connection(amqp_url) as conn, conn.channel() as channel:
            queue(channel).delete()
            bus.dead_letter_queue(queue.name)(channel).delete()
        with pool.transaction() as conn:
            conn.execute(f"DELETE FROM {PROFILE_PROCESSOR_INBOX} WHERE event_id = ANY(%s)",
                         ([once, flaky],))
