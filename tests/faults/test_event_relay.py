"""mdm_endpoint.service.EventRelay without a broker: what a failing publisher does to events."""

from __future__ import annotations

import threading

from mdm_endpoint.service import EventRelay
from tests.support.waiting import eventually


class FlakyPublisher:
    """Fails while `down` is set; records what it took, with the message ids."""

    def __init__(self):
        self.down = threading.Event()
        self.taken: list[tuple[str, dict, str]] = []
        self.calls_from_main = 0

    def publish(self, routing_key, body, message_id=None):
        if threading.current_thread() is threading.main_thread():
            self.calls_from_main += 1
        if self.down.is_set():
            raise ConnectionError("broker down")
        self.taken.append((routing_key, body, message_id))


def test_events_survive_an_outage_in_order_with_stable_ids():
    publisher = FlakyPublisher()
    relay = EventRelay(publisher, pause=0.01, max_pause=0.05)
    relay.publish("command.result", {"n": 0})
    publisher.down.set()
    for n in range(1, 6):
        relay.publish("command.result", {"n": n})
    assert relay.pending() == 5
    # Only the first event met the outage in the caller's thread; the others queued behind it
    # without a synchronous try (a host's request does not wait for the publisher's retries).
    relay.publish("command.result", {"n": 6})
    assert publisher.calls_from_main == 2
    publisher.down.clear()
    assert eventually(lambda: relay.pending() == 0)
    assert [body["n"] for _, body, _ in publisher.taken] == list(range(7))
    ids = [message_id for *_, message_id in publisher.taken]
    assert all(ids) and len(set(ids)) == 7


def test_the_relay_is_bounded():
    publisher = FlakyPublisher()
    publisher.down.set()
    relay = EventRelay(publisher, max_pending=3, pause=0.01, max_pause=0.01)
    for n in range(10):
        relay.publish("host.enrolled", {"n": n})
    assert relay.pending() == 3
    publisher.down.clear()
    assert eventually(lambda: relay.pending() == 0)
    assert [body["n"] for _, body, _ in publisher.taken] == [7, 8, 9]  # the newest are kept
