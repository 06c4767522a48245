"""The MDM check-in and command services: what happens for each Apple message, after the
device's identity was verified. Typed errors carry the HTTP status the views answer with. The
events a message causes (host.enrolled, host.checked_out, command.result) are added to the outbox
in its transaction: the host's answer never waits on the broker, and none is lost to an outage."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from mdmscep_common import bus, mdm_commands
from mdmscep_common.crypto import SecretBox
from mdmscep_common.one_time_codes import redact_codes_in_bytes
from mdmscep_common.outbox import Events

from .command_payloads import open_next
from .host_facts import FactRequests, facts_of
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


class MdmService:
    def __init__(self, db, hosts: HostStore, commands: CommandStore, events: Events,
                 secrets: SecretBox):
        self._db = db
        self._hosts = hosts
        self._commands = commands
        self._events = events  # the outbox
        self._secrets = secrets  # opens queued command payloads (command_payloads)
        self._facts = FactRequests(commands, events, secrets)

    def _require_bound(self, conn, udid: str, identity: DeviceIdentity) -> None:
        bound = self._hosts.identity_of(conn, udid)
        if bound is None or bound != identity.sha256:
            raise IdentityMismatch("the signing certificate is not bound to this device")

    def checkin(self, body: bytes, identity: DeviceIdentity) -> None:
        """Authenticate, TokenUpdate or CheckOut (Apple: Check-in)."""
        message = parse_checkin(body)  # parsed in full before the transaction (see connect)
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
                    self._events.add(conn, bus.HOST_ENROLLED, {
                        "host_uuid": message.udid,
                        "facts": self._hosts.label_facts(conn, message.udid)})
                    self._facts.ask(conn, [message.udid])  # its facts, first thing
                    log.info("host enrolled", extra={"host_uuid": message.udid})
            elif isinstance(message, CheckOut):
                self._require_bound(conn, message.udid, identity)
                self._hosts.check_out(conn, message.udid)
                self._events.add(conn, bus.HOST_CHECKED_OUT, {"host_uuid": message.udid})
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

    def connect(self, body: bytes, identity: DeviceIdentity) -> bytes | None:
        """Store a command result and return the next command for the host (Apple: Commands)."""
        # All of the body's parsing (its bounds, plistlib, the event's details) is done here,
        # before the transaction: the exchange below locks the host's row until the commit.
        # A host's error may quote the proxy URL it could not reach, one-time code included: the
        # code is masked before the result is stored or published.
        body = redact_codes_in_bytes(body)
        result = parse_result(body)
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
                elif request_type == mdm_commands.DEVICE_INFORMATION:
                    # mdm-endpoint's own question: the answer is kept; changed facts are
                    # published (not the command's result).
                    if result.status == "Acknowledged":
                        changed = self._hosts.update_facts(conn, result.udid,
                                                           facts_of(result.query_responses))
                        if changed is not None:  # dynamic labels are the processor's
                            self._events.add(conn, bus.HOST_FACTS_CHANGED,
                                             {"host_uuid": result.udid, "facts": changed})
                else:
                    self._events.add(conn, bus.COMMAND_RESULT, result.event(request_type))
            for closed in unreadable:
                self._events.add(conn, bus.COMMAND_RESULT, closed.result_event(result.udid))
        return payload
