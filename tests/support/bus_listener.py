"""Listen to bus events in tests: a temporary queue bound to some routing keys."""

from __future__ import annotations

import time
import uuid

import kombu

from mdmscep_common import bus


class BusListener:
    def __init__(self, amqp_url: str, routing_keys: list[str]):
        self._conn = kombu.Connection(amqp_url)
        self._queue = kombu.Queue(f"test.listener.{uuid.uuid4().hex[:8]}", exchange=bus.EXCHANGE,
                                  routing_key=None, exclusive=True, auto_delete=True,
                                  bindings=[kombu.binding(bus.EXCHANGE, routing_key=k)
                                            for k in routing_keys])
        self._bound = self._queue(self._conn.default_channel)
        self._bound.declare()
        self.received: list[tuple[str, dict]] = []

    def _drain(self) -> None:
        while (message := self._bound.get(no_ack=True, accept=["json"])) is not None:
            self.received.append((message.delivery_info["routing_key"], message.payload))

    def wait_for(self, predicate, timeout: float = 10.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            matched = [m for m in self.received if predicate(*m)]
            if matched or time.monotonic() > deadline:
                return matched
            time.sleep(0.05)

    def close(self) -> None:
        self._conn.release()
