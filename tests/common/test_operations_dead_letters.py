"""Dead letters against a real RabbitMQ: a poison message is counted, logged and measured, shows in
`mdmscep-dlq list` (and stays there), and once the handler is fixed `replay` hands it back to its
queue with its original routing key; a message RabbitMQ dead-letters at the delivery limit is
listed with that reason and can be discarded."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mdmscep_common import bus, dlq
from tests.support.consuming import consume_in_thread
from tests.support.waiting import wait_for

CLI = str(Path(sys.executable).parent / "mdmscep-dlq")


def sample(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def work_queue(amqp_url):
    """A work queue (with its .dlq) and a worker whose handler can be broken and fixed."""
    name, key = f"ops.{uuid.uuid4().hex[:8]}", f"ops.event.{uuid.uuid4().hex[:6]}"
    queue = bus.durable_queue(name, [key])
    with bus.connection(amqp_url) as conn:
        bus.declare_queue(conn, queue)
    state = {"broken": "poison", "handled": []}

    def handle(body, delivery):
        if state["broken"] == "poison":
            raise bus.PoisonMessage("this version of the handler cannot read it")
        if state["broken"] == "crash":
            raise RuntimeError("a bug")
        state["handled"].append((body, delivery.routing_key))

    worker = bus.Worker(amqp_url, {name: (queue, handle)}, prefetch=4, requeue_pause=0.01,
                        queue_depth_interval=0.2)
    thread = consume_in_thread(worker)
    yield {"name": name, "key": key, "state": state}
    worker.stop()
    thread.join(10)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = dlq.main(list(argv))
    return code, capsys.readouterr().out


def test_a_poison_message_is_listed_and_replays_after_the_fix(amqp_url, work_queue, capsys, caplog):
    name, key, state = work_queue["name"], work_queue["key"], work_queue["state"]
    dead_before = sample("mdmscep_bus_messages_dead_lettered_total", queue=name, reason="poison")
    caplog.set_level(logging.INFO)
    message_id = str(uuid.uuid4())
    bus.Publisher(amqp_url).publish(key, {"version": 2, "host_uuid": "H-1"}, message_id=message_id)

    letters = wait_for(lambda: dlq.DeadLetters(amqp_url).list(name), what="the dead letter")
    assert [(d.id, d.routing_key, d.reason) for d in letters] == [(message_id, key, "rejected")]
    assert sample("mdmscep_bus_messages_dead_lettered_total", queue=name,
                  reason="poison") == dead_before + 1
    assert any(r.getMessage() == "poison message sent to dead-letter queue"
               and r.__dict__.get("queue") == name for r in caplog.records)
    wait_for(lambda: sample("mdmscep_bus_queue_depth", queue=f"{name}.dlq") == 1,
             what="the dead-letter queue's depth")
    assert any("dead-letter queue holds messages" in r.getMessage() for r in caplog.records)

    # Listing leaves the message in place; the console script reads AMQP_URL.
    listed = subprocess.run([CLI, "list", name, "--json"], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "AMQP_URL": amqp_url}, check=True)
    [entry] = json.loads(listed.stdout)
    assert entry["body"] == {"version": 2, "host_uuid": "H-1"}
    assert (entry["id"], entry["routing_key"], entry["queue"]) == (message_id, key, name)
    code, out = run_cli(capsys, "--amqp-url", amqp_url, "list", f"{name}.dlq")
    assert code == 0 and message_id in out and key in out
    code, out = run_cli(capsys, "--amqp-url", amqp_url, "show", name, "--id", message_id)
    assert code == 0 and json.loads(out)["headers"]["x-death"][0]["queue"] == name
    assert state["handled"] == []

    state["broken"] = None  # the fix is deployed
    code, out = run_cli(capsys, "--amqp-url", amqp_url, "replay", name, "--id", message_id)
    assert code == 0 and f"replayed {message_id}" in out
    wait_for(lambda: state["handled"], what="the replayed message handled")
    # Its own queue only, with the routing key it was published with (the handler dispatches
    # on it), and gone from the dead-letter queue.
    assert state["handled"] == [({"version": 2, "host_uuid": "H-1"}, key)]
    assert dlq.DeadLetters(amqp_url).list(name) == []
    wait_for(lambda: sample("mdmscep_bus_queue_depth", queue=f"{name}.dlq") == 0,
             what="the dead-letter queue drained")


def test_delivery_limit_dead_letters_are_listed_and_can_be_discarded(amqp_url, work_queue, capsys,
                                                                    caplog):
    name, key, state = work_queue["name"], work_queue["key"], work_queue["state"]
    state["broken"] = "crash"
    caplog.set_level(logging.INFO)
    before = sample("mdmscep_bus_messages_dead_lettered_total", queue=name, reason="delivery_limit")
    failed_before = sample("mdmscep_bus_messages_failed_total", queue=name)
    bus.Publisher(amqp_url).publish(key, {"job": 1})
    [letter] = wait_for(lambda: dlq.DeadLetters(amqp_url).list(name), what="the dead letter")
    assert letter.reason == "delivery_limit" and letter.routing_key == key
    assert sample("mdmscep_bus_messages_dead_lettered_total", queue=name,
                  reason="delivery_limit") == before + 1
    assert sample("mdmscep_bus_messages_failed_total", queue=name) == \
        failed_before + bus.DELIVERY_LIMIT + 1
    assert sample("mdmscep_bus_messages_redelivered_total", queue=name) >= bus.DELIVERY_LIMIT
    assert any("delivery limit reached" in r.getMessage() for r in caplog.records)

    code, out = run_cli(capsys, "--amqp-url", amqp_url, "discard", name, "--id", "no-such-id")
    assert code == 1
    code, out = run_cli(capsys, "--amqp-url", amqp_url, "discard", name, "--all")
    assert code == 0 and f"discarded {letter.id}" in out
    assert dlq.DeadLetters(amqp_url).list(name) == []
    assert state["handled"] == []
    code, out = run_cli(capsys, "--amqp-url", amqp_url, "list", "no.such.queue")
    assert code == 2
