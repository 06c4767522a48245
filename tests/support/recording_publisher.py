"""A bus publisher that keeps messages in memory, for tests of services that publish
(it has mdmscep_common.bus.Publisher's methods)."""

from __future__ import annotations

from typing import Any


class RecordingPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        self.messages.append((routing_key, body))

    def close(self) -> None:
        pass
