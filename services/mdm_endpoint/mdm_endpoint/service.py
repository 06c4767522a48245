"""The MDM check-in and command services: what happens for each Apple message, after the
device's identity was verified. Typed errors carry the HTTP status the views answer with."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from mdmscep_common import bus

from .identity import DeviceIdentity
from .protocol import Authenticate, CheckOut, TokenUpdate, parse_checkin, parse_result
from .store import CertificateBoundElsewhere, CommandStore, HostStore

log = logging.getLogger(__name__)


class MdmError(Exception):
    status = 400


class IdentityMismatch(MdmError):
    """The signing certificate is not the one bound to this UDID (403)."""
    status = 403


class Publisher(Protocol):
    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None: ...


class MdmService:
    def __init__(self, db, hosts: HostStore, commands: CommandStore, publisher: Publisher):
        self._db = db
        self._hosts = hosts
        self._commands = commands
        self._publisher = publisher

    def _publish(self, routing_key: str, body: dict[str, Any]) -> None:
        # After the commit. A lost event is repaired by the processor's reconcile pass, which
        # reads hosts and command results from the tables.
        try:
            self._publisher.publish(routing_key, body)
        except Exception:  # noqa: BLE001
            log.exception("could not publish", extra={"routing_key": routing_key})

    def _require_bound(self, conn, udid: str, identity: DeviceIdentity) -> None:
        bound = self._hosts.identity_of(conn, udid)
        if bound is None or bound != identity.sha256:
            raise IdentityMismatch("the signing certificate is not bound to this device")

    def checkin(self, body: bytes, identity: DeviceIdentity) -> None:
        """Authenticate, TokenUpdate or CheckOut (Apple: Check-in)."""
        message = parse_checkin(body)
        event = None
        with self._db.transaction() as conn:
            if isinstance(message, Authenticate):
                try:
                    self._hosts.authenticate(conn, message.udid, identity.sha256, {
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
        if event:
            self._publish(*event)

    def connect(self, body: bytes, identity: DeviceIdentity) -> bytes | None:
        """Store a command result and return the next command for the host (Apple: Commands)."""
        result = parse_result(body)
        event = None
        with self._db.transaction() as conn:
            # One statement: seen, then (only for the bound device) the result stored and the
            # next command taken; anything else rolls back with the 403.
            bound, request_type, command = self._commands.exchange(
                conn, result.udid, identity.sha256, result.status, result.command_uuid, body)
            if bound != identity.sha256:
                raise IdentityMismatch("the signing certificate is not bound to this device")
            if result.status != "Idle":
                if request_type is None:
                    log.warning("result for an unknown command",
                                extra={"host_uuid": result.udid, "command_uuid": result.command_uuid})
                else:
                    event = result.event(request_type)
        if event:
            self._publish(bus.COMMAND_RESULT, event)
        return command.payload if command else None
