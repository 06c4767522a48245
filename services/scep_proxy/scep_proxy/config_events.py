"""Listens for `config.changed` so cached CA answers die with the configuration they came from.

Each proxy worker process has its own cache, so each consumes its own exclusive, auto-delete,
non-durable queue bound to the `mdmscep` exchange (a broadcast, unlike the work queues of
mdmscep_common.bus). Messages are auto-acknowledged: dropping a cache entry is idempotent and
a lost message costs at most one cache TTL. After a broker outage the whole cache is dropped,
since messages sent meanwhile were missed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Queue
from kombu.mixins import ConsumerMixin

from mdmscep_common import bus

log = logging.getLogger(__name__)

# Called with the CA name to forget, or None for everything.
Forget = Callable[[str | None], None]


def ca_to_forget(body: Any) -> str | None:
    """The CA whose cached answers a config.changed body makes stale; None means all of them."""
    if not isinstance(body, dict):
        return None
    name = body.get("name")
    if body.get("kind") == "certificate_authority" and isinstance(name, str) and name:
        return name
    return None


class ConfigListener(ConsumerMixin):
    def __init__(self, amqp_url: str, forget: Forget):
        self.connection = bus.connection(amqp_url, heartbeat=0)
        self._forget = forget
        self.ready = threading.Event()
        self.connections = 0  # times consuming (re)started: a test can watch reconnects
        self._thread: threading.Thread | None = None

    @staticmethod
    def _queue() -> Queue:
        # A new name per connection: the dead connection's exclusive queue may linger briefly.
        name = (f"scep-proxy.config-changed.{socket.gethostname()}.{os.getpid()}."
                f"{uuid.uuid4().hex[:8]}")
        return Queue(name, exchange=bus.EXCHANGE, routing_key=bus.CONFIG_CHANGED,
                     durable=False, exclusive=True, auto_delete=True)

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self._queue()], callbacks=[self._on_message], accept=["json"],
                         no_ack=True)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self._forget(None)  # anything sent while we were away was missed
        self.connections += 1
        self.ready.set()

    def on_connection_error(self, exc, interval):
        self.ready.clear()
        log.warning("config.changed listener lost the broker, reconnecting",
                    extra={"error": str(exc), "retry_in": interval})

    def _on_message(self, body: Any, message) -> None:
        ca_name = ca_to_forget(body)
        self._forget(ca_name)
        log.info("configuration changed; cached CA answers dropped",
                 extra={"ca": ca_name or "(all)"})

    def start(self) -> ConfigListener:
        self._thread = threading.Thread(target=self.run, name="config-changed-listener",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout)
