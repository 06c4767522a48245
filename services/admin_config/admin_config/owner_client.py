"""What admin-config's gRPC clients share. admin-config shows hosts, deliveries, host certificates
and CA traffic that other services own, and asks those owners for them: each client holds one
mutual-TLS channel to its owner (the server's certificate must name that service), every call
has a deadline, and an owner that cannot answer makes the admin request a 503."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mdmscep_common.service_tls import RECONNECT_OPTIONS, ServiceTls

from .errors import ServiceUnavailable

log = logging.getLogger(__name__)

OWNER_CALL_TIMEOUT_SECONDS = 10.0
# How long a call waits for a channel that failed to connect once to connect again: during the
# channel's reconnect backoff a call fails at once, even to an owner that is back. The longest
# backoff (service_tls.RECONNECT_OPTIONS) and a handshake.
RECONNECT_WAIT_SECONDS = dict(RECONNECT_OPTIONS)["grpc.max_reconnect_backoff_ms"] / 1000 + 0.5
# The most host UUIDs one request may name (HostRegistry and DeliveryDirectory alike).
MAX_HOST_UUIDS_PER_CALL = 1000
MAX_PER_PAGE = 1000


class OwnerClient:
    """One gRPC service of one owner: `stub_class` over a channel to `service` at `address`."""

    # How the admin is told who did not answer ("The MDM endpoint is unavailable…").
    owner_label = "A service"

    def __init__(self, address: str, tls: ServiceTls, service: str, stub_class: type,
                 timeout: float = OWNER_CALL_TIMEOUT_SECONDS):
        self._channel = tls.channel(address, service)
        self._stub = stub_class(self._channel)
        self._timeout = timeout

    def _ask(self, method: str, request: Any, field: str, none_if_not_found: bool = False) -> Any:
        """The owner's answer to `method`, or ServiceUnavailable naming `field` and the status
        (`none_if_not_found`: None for NOT_FOUND, an answer of its own)."""
        try:
            return self._call(method, request, self._timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if none_if_not_found and code == grpc.StatusCode.NOT_FOUND:
                return None
            # UNAVAILABLE and DEADLINE_EXCEEDED pass; anything else is a mismatch between the two
            # sides (a request admin-config should not have made, or an older owner).
            level = (logging.WARNING if code in (grpc.StatusCode.UNAVAILABLE,
                                                 grpc.StatusCode.DEADLINE_EXCEEDED)
                     else logging.ERROR)
            log.log(level, "owner did not answer", extra={"method": method, "code": code.name})
            raise ServiceUnavailable(f"{self.owner_label} is unavailable; try again shortly.",
                                     [{"name": field, "reason": code.name}]) from None

    def _call(self, method: str, request: Any, timeout: float) -> Any:
        """The owner's answer; a call refused UNAVAILABLE is made once more if the channel
        connects within RECONNECT_WAIT_SECONDS (an owner that is down is a 503 within that)."""
        call = getattr(self._stub, method)
        try:
            return call(request, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or not self._ready_within(
                    RECONNECT_WAIT_SECONDS):
                raise
        return call(request, timeout=timeout)

    def _ready_within(self, seconds: float) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=seconds)
        except grpc.FutureTimeoutError:
            return False
        return True

    def close(self) -> None:
        self._channel.close()


def time_of(message: Any, field: str) -> datetime | None:
    """A google.protobuf.Timestamp field as an aware UTC datetime; None when unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def chunks(items: list[str], size: int = MAX_HOST_UUIDS_PER_CALL) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
