"""Keeps in memory the events a service would publish, for tests of services without a broker:
it stands for an outbox (`add`, mdmscep_common.outbox.Events: recorded at once, whether or not
the caller's transaction commits), for scep-proxy's outcome recorder (`record`,
scep_proxy.outcomes.OutcomeRecorder) and for a bus publisher (`publish`)."""

from __future__ import annotations

import uuid
from typing import Any


class RecordingPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        # scep-proxy: (CA, outcome, latency) of the requests that reached the CA (ca_requests).
        self.ca_requests: list[tuple[str, str, float]] = []

    def add(self, conn, routing_key: str, body: dict[str, Any]) -> str:
        self.messages.append((routing_key, body))
        return str(uuid.uuid4())

    def record(self, outcome, latency_ms: float | None) -> None:
        self.messages.append(("scep.result", outcome.body()))
        if latency_ms is not None:
            self.ca_requests.append((outcome.ca_name, outcome.outcome, latency_ms))

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        self.messages.append((routing_key, body))

    def close(self) -> None:
        pass


class RecordingCommander:
    """A Commander that keeps what it was asked to queue, all together and call by call."""

    def __init__(self):
        self.commands = []
        self.calls = []

    def enqueue(self, commands):
        self.calls.append(list(commands))
        self.commands += commands
        return len(commands)
