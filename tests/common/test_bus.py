"""The kombu bus against a real RabbitMQ (a vhost per test run)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest

from mdmscep_common import bus
from tests.support.consuming import consume_in_thread
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually


@pytest.fixture
def queue_name():
    return f"test.{uuid.uuid4().hex[:8]}"


def _declare(amqp_url, queue_name, routing_key):
    queue = bus.durable_queue(queue_name, [routing_key])
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
    return queue


def _drain(amqp_url, queue: kombu.Queue, expect: int, timeout: float = 15.0) -> list:
    """Read messages off a queue (acking them) until `expect` arrived or time ran out."""
    got = []
    with kombu.Connection(amqp_url) as conn:
        bound = queue(conn.default_channel)
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            message = bound.get(no_ack=False, accept=["json", "text/plain"])
            if message is None:
                time.sleep(0.1)
                continue
            got.append(message)
            message.ack()
    return got


def _start_worker(amqp_url, queue, handler, **kw):
    worker = bus.Worker(amqp_url, {queue.name: (queue, handler)}, prefetch=4, **kw)
    return worker, consume_in_thread(worker)


def test_message_is_acked_only_after_the_handler(amqp_url, queue_name):
    queue = _declare(amqp_url, queue_name, "test.ok")
    seen = []
    worker, thread = _start_worker(amqp_url, queue, lambda body, d: seen.append(body))
    try:
        bus.Publisher(amqp_url).publish("test.ok", {"n": 1})
        assert eventually(lambda: seen == [{"n": 1}], 15)
    finally:
        worker.stop()
        thread.join(10)
    assert _drain(amqp_url, queue, expect=1, timeout=1) == []


def test_consumer_killed_before_ack_gets_the_message_redelivered(amqp_url, queue_name, tmp_path):
    _declare(amqp_url, queue_name, "test.kill")
    record = tmp_path / "record.jsonl"

    def consumer(*extra):
        return subprocess.Popen([sys.executable, "-m", "tests.support.bus_consumer",
                                 "--amqp-url", amqp_url, "--queue", queue_name,
                                 "--routing-key", "test.kill", "--record", str(record), *extra])

    hanging = consumer("--hang")
    try:
        bus.Publisher(amqp_url).publish("test.kill", {"job": "certificate"})
        assert eventually(lambda: record.exists() and record.read_text().count("\n") == 1, 15)
    finally:
        hanging.kill()
        hanging.wait()
    healthy = consumer()
    try:
        assert eventually(lambda: record.read_text().count("\n") == 2, 15)
    finally:
        healthy.terminate()
        healthy.wait(10)
    first, second = [json.loads(line) for line in record.read_text().splitlines()]
    assert first == {"body": {"job": "certificate"}, "redelivered": False}
    assert second == {"body": {"job": "certificate"}, "redelivered": True}


def test_publishing_goes_on_after_the_connection_is_cut(amqp_url, queue_name):
    queue = _declare(amqp_url, queue_name, "test.cut")
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.port or 5672)
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}"
                                               f"@127.0.0.1:{proxy.port}"))
    publisher = bus.Publisher(proxied)
    try:
        for n in range(5):
            publisher.publish("test.cut", {"n": n})
        proxy.cut()
        for n in range(5, 10):
            publisher.publish("test.cut", {"n": n})
    finally:
        publisher.close()
        proxy.close()
    received = {m.payload["n"] for m in _drain(amqp_url, queue, expect=10)}
    assert received == set(range(10))


def _dead_letters(amqp_url, queue_name, expect):
    return _drain(amqp_url, bus.dead_letter_queue(queue_name), expect=expect, timeout=20)


def test_poison_messages_end_in_the_dead_letter_queue(amqp_url, queue_name):
    queue = _declare(amqp_url, queue_name, "test.poison")

    def handler(body, delivery):
        if body.get("kind") == "unknown":
            raise bus.PoisonMessage("unknown kind")

    worker, thread = _start_worker(amqp_url, queue, handler)
    try:
        bus.Publisher(amqp_url).publish("test.poison", {"kind": "unknown"})
        with kombu.Connection(amqp_url) as conn:  # not JSON at all
            conn.Producer().publish(b"{not json", exchange=bus.EXCHANGE, routing_key="test.poison",
                                    content_type="application/json", content_encoding="utf-8")
        dead = _dead_letters(amqp_url, queue_name, expect=2)
    finally:
        worker.stop()
        thread.join(10)
    assert len(dead) == 2
    assert {bytes(m.body, "utf-8") if isinstance(m.body, str) else m.body for m in dead} == {
        b'{"kind": "unknown"}', b"{not json"}


def test_a_message_that_always_fails_is_dead_lettered_after_the_delivery_limit(amqp_url, queue_name):
    queue = _declare(amqp_url, queue_name, "test.fail")
    attempts = []

    def handler(body, delivery):
        attempts.append(delivery.redelivered)
        raise RuntimeError("dependency broken")

    worker, thread = _start_worker(amqp_url, queue, handler, requeue_pause=0.01)
    try:
        bus.Publisher(amqp_url).publish("test.fail", {"kind": "always-fails"})
        dead = _dead_letters(amqp_url, queue_name, expect=1)
    finally:
        worker.stop()
        thread.join(10)
    assert len(dead) == 1
    assert len(attempts) == bus.DELIVERY_LIMIT + 1
    assert attempts[0] is False and all(attempts[1:])
