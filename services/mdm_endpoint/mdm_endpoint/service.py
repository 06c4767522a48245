"""The MDM check-in and command services: what happens for each Apple message, after the
device's identity was verified. Typed errors carry the HTTP status the views answer with."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any, Protocol

from prometheus_client import Counter

from mdmscep_common import bus
from mdmscep_common.crypto import SecretBox
from mdmscep_common.one_time_codes import redact_codes_in_bytes

from .command_payloads import open_next
from .identity import DeviceIdentity
from .protocol import Authenticate, CheckOut, TokenUpdate, parse_checkin, parse_result
from .store import CertificateBoundElsewhere, CommandStore, HostStore

log = logging.getLogger(__name__)

IDENTITY_REBINDS = Counter(
    "mdmscep_identity_rebinds", "Known devices (UDIDs) re-bound to a new identity certificate by "
    "an Authenticate: a wiped device re-enrolling, or someone with an identity certificate "
    "taking the UDID over")


class MdmError(Exception):
    status = 400


class IdentityMismatch(MdmError):
    """The signing certificate is not the one bound to this UDID (403)."""
    status = 403


class Publisher(Protocol):
    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None: ...


class EventRelay:
    """Publishes events after the commit; one the broker cannot take now (down for longer than
    the publisher's own retries) is kept in memory and published again from a thread until the
    broker is back. While events wait, new ones queue behind them (in order, and without making
    each host's request wait for the publisher's retries). A command.result lost here would hold
    its delivery until the processor's re-send after SCEP_CODE_TTL. Bounded: past `max_pending`
    the oldest waiting event is dropped and logged."""

    def __init__(self, publisher: Publisher, max_pending: int = 50_000, pause: float = 1.0,
                 max_pause: float = 15.0):
        self._publisher = publisher
        self._pending: collections.deque[tuple[str, dict[str, Any], str]] = collections.deque()
        self._max_pending = max_pending
        self._pause, self._max_pause = pause, max_pause
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def publish(self, routing_key: str, body: dict[str, Any]) -> None:
        message_id = str(uuid.uuid4())  # the same id on every try: consumers may deduplicate
        with self._lock:
            waiting = bool(self._pending)
        if not waiting:
            try:
                self._publisher.publish(routing_key, body, message_id=message_id)
                return
            except Exception as exc:  # noqa: BLE001 - kept and retried below
                log.warning("could not publish; kept to publish again when the broker is back",
                            extra={"routing_key": routing_key, "error": str(exc)[:200]})
        self._keep(routing_key, body, message_id)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _keep(self, routing_key: str, body: dict[str, Any], message_id: str) -> None:
        with self._lock:
            self._pending.append((routing_key, body, message_id))
            if len(self._pending) > self._max_pending:
                dropped = self._pending.popleft()
                log.error("too many events waiting for the broker; the oldest is dropped",
                          extra={"routing_key": dropped[0]})
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="event-relay",
                                                daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        pause = self._pause
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                routing_key, body, message_id = self._pending[0]
            try:
                self._publisher.publish(routing_key, body, message_id=message_id)
            except Exception:  # noqa: BLE001 - the broker is still away: wait and try again
                time.sleep(pause)
                pause = min(pause * 2, self._max_pause)
                continue
            pause = self._pause
            with self._lock:
                if self._pending and self._pending[0][2] == message_id:
                    self._pending.popleft()
                left = len(self._pending)
            if not left:
                log.info("events kept during a broker outage are published")


class MdmService:
    def __init__(self, db, hosts: HostStore, commands: CommandStore, publisher: Publisher,
                 secrets: SecretBox):
        self._db = db
        self._hosts = hosts
        self._commands = commands
        self._events = EventRelay(publisher)
        self._secrets = secrets  # opens queued command payloads (command_payloads)

    def _publish(self, routing_key: str, body: dict[str, Any]) -> None:
        # After the commit; kept and published again if the broker cannot take it now.
        self._events.publish(routing_key, body)

    def _require_bound(self, conn, udid: str, identity: DeviceIdentity) -> None:
        bound = self._hosts.identity_of(conn, udid)
        if bound is None or bound != identity.sha256:
            raise IdentityMismatch("the signing certificate is not bound to this device")

    def checkin(self, body: bytes, identity: DeviceIdentity) -> None:
        """Authenticate, TokenUpdate or CheckOut (Apple: Check-in)."""
        message = parse_checkin(body)  # parsed in full before the transaction (see connect)
        event = None
        replaced = None
        with self._db.transaction() as conn:
            if isinstance(message, Authenticate):
                try:
                    replaced = self._hosts.authenticate(conn, message.udid, identity.sha256, {
                        "serial_number": message.serial_number, "topic": message.topic,
                        "device_name": message.device_name, "model": message.model,
                        "os_version": message.os_version})
                except CertificateBoundElsewhere:
                    raise IdentityMismatch("the signing certificate belongs to another device") from None
                # A (re-)enrolling device starts with an empty queue.
                self._commands.clear_queue(conn, message.udid)
                log.info("host authenticated", extra={"host_uuid": message.udid})
            elif isinstance(message, TokenUpdate):
                self._require_bound(conn, message.udid, identity)
                if self._hosts.token_update(conn, message.udid, message.topic, message.token,
                                            message.push_magic):
                    event = (bus.HOST_ENROLLED, {"host_uuid": message.udid})
                    log.info("host enrolled", extra={"host_uuid": message.udid})
            elif isinstance(message, CheckOut):
                self._require_bound(conn, message.udid, identity)
                self._hosts.check_out(conn, message.udid)
                event = (bus.HOST_CHECKED_OUT, {"host_uuid": message.udid})
                log.info("host checked out", extra={"host_uuid": message.udid})
        if replaced is not None:
            # Allowed (a wiped device re-enrolls: README.md "Apple MDM endpoint"), and worth an
            # operator's eye: any holder of an identity certificate could do the same. Said once
            # committed.
            IDENTITY_REBINDS.inc()
            log.warning("host re-bound to a new identity certificate",
                        extra={"host_uuid": message.udid, "serial_number": message.serial_number,
                               "previous_certificate_sha256": replaced.hex(),
                               "certificate_sha256": identity.sha256.hex()})
        if event:
            self._publish(*event)

    def connect(self, body: bytes, identity: DeviceIdentity) -> bytes | None:
        """Store a command result and return the next command for the host (Apple: Commands)."""
        # All of the body's parsing (its bounds, plistlib, the event's details) is done here,
        # before the transaction: the exchange below locks the host's row until the commit.
        # A host's error may quote the proxy URL it could not reach, one-time code included: the
        # code is masked before the result is stored or published.
        body = redact_codes_in_bytes(body)
        result = parse_result(body)
        event = None
        with self._db.transaction() as conn:
            # One statement: seen, then (only for the bound device) the result stored and the
            # next command taken; anything else rolls back with the 403.
            bound, request_type, command = self._commands.exchange(
                conn, result.udid, identity.sha256, result.status, result.command_uuid, body)
            if bound != identity.sha256:
                raise IdentityMismatch("the signing certificate is not bound to this device")
            payload, unreadable = open_next(self._secrets, self._commands, conn, result.udid,
                                            command, include_not_now=result.status == "Idle")
            if result.status != "Idle":
                if request_type is None:
                    log.warning("result for an unknown command",
                                extra={"host_uuid": result.udid, "command_uuid": result.command_uuid})
                else:
                    event = result.event(request_type)
        if event:
            self._publish(bus.COMMAND_RESULT, event)
        for closed in unreadable:
            self._publish(bus.COMMAND_RESULT, closed.result_event(result.udid))
        return payload
