"""Queue depth for Prometheus: consumers measure their queues and dead-letter queues, so messages
RabbitMQ dead-letters without any consumer seeing them (a consumer killed by the same message at
every delivery) still show up, as `mdmscep_bus_queue_depth{queue="<queue>.dlq"}`."""

from __future__ import annotations

import logging
import time

from kombu import Connection

from . import metrics

log = logging.getLogger(__name__)


class QueueDepths:
    """Measures the ready messages of a consumer's queues and their dead-letter queues with a
    passive declare on a channel of its own (a missing queue closes only that channel), at most
    every `interval` seconds; logs when a dead-letter queue grows."""

    def __init__(self, queues: list[str], dead_letter_queues: list[str], interval: float):
        self._names = [*queues, *dead_letter_queues]
        self._dead_letter_queues = set(dead_letter_queues)
        self._interval = interval
        self._measured_at = float("-inf")
        self._dead_letters: dict[str, int] = {}

    def measure(self, conn: Connection | None) -> None:
        if conn is None or time.monotonic() - self._measured_at < self._interval:
            return
        self._measured_at = time.monotonic()
        try:
            channel = conn.channel()
        except Exception:  # noqa: BLE001 - a metric must never stop a consumer
            return
        try:
            for name in self._names:
                _, depth, _ = channel.queue_declare(queue=name, passive=True)
                metrics.BUS_QUEUE_DEPTH.labels(name).set(depth)
                if name in self._dead_letter_queues:
                    self._note_dead_letters(name, depth)
        except Exception as exc:  # noqa: BLE001
            log.debug("queue depth not measured", extra={"error": str(exc)})
        finally:
            try:
                channel.close()
            except Exception:  # noqa: BLE001, S110 - the channel may already be closed
                pass

    def _note_dead_letters(self, name: str, depth: int) -> None:
        before = self._dead_letters.get(name, 0)
        self._dead_letters[name] = depth
        if depth > before:
            log.warning("dead-letter queue holds messages; inspect with mdmscep-dlq",
                        extra={"queue": name, "messages": depth, "new": depth - before})
