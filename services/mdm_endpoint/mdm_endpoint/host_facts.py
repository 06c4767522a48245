"""Host facts: what each host says of itself when asked DeviceInformation (Apple: Device
Management → DeviceInformation), kept on its hosts row (migrations/0002_host_facts.sql) so hosts
can be listed and filtered by them.

A host is asked when it becomes enrolled (in the TokenUpdate's transaction) and then every
HOST_FACTS_INTERVAL by the refresh in `mdm-endpoint grpc` (FactRefresh). mdm-endpoint queues
these commands itself: they are its own, so they do not go through the Commander (the processor's
door) and their results are not published as command.result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mdmscep_common import bus, mdm_commands
from mdmscep_common.crypto import SecretBox
from mdmscep_common.outbox import Events
from mdmscep_common.retention import PeriodicTask

from .command_payloads import seal_payload

if TYPE_CHECKING:  # the store reads the platforms from here
    from .store import CommandStore

log = logging.getLogger(__name__)

# Query → hosts column. SerialNumber, DeviceName, Model and OSVersion also come with Authenticate.
QUERIES = {"SerialNumber": "serial_number", "DeviceName": "device_name", "Model": "model",
           "OSVersion": "os_version", "ProductName": "product_name"}
MAX_FACT_CHARS = 255
# Hosts asked per refresh round, and per push.requested message.
REFRESH_BATCH = 1000


@dataclass(frozen=True)
class HostFacts:
    """Only what the host answered: a query it left out keeps its stored value."""

    values: dict[str, str]  # hosts column → value


def facts_of(query_responses: Any) -> HostFacts:
    """The facts of a DeviceInformation answer's QueryResponses; values that are not short text
    are left out (a device never sends them; anything else is not stored)."""
    values: dict[str, str] = {}
    if isinstance(query_responses, dict):
        for query, column in QUERIES.items():
            value = query_responses.get(query)
            if isinstance(value, str) and len(value) <= MAX_FACT_CHARS and value.isprintable():
                values[column] = value
    return HostFacts(values)


# Fleet's platform names, by the product names' prefixes (Apple's hardware model identifiers).
PLATFORM_PREFIXES = {"darwin": ("Mac", "iMac", "VirtualMac"), "ios": ("iPhone", "iPod"),
                     "ipados": ("iPad",)}


def platform_of(product_name: str) -> str:
    """Fleet's platform name for a product name: darwin (a Mac), ios, ipados; "" when unknown."""
    for platform, prefixes in PLATFORM_PREFIXES.items():
        if product_name.startswith(prefixes):
            return platform
    return ""


def platform_sql(column: str) -> str:
    """platform_of as an SQL expression over `column` (a product name column)."""
    cases = " ".join(f"WHEN starts_with({column}, '{prefix}') THEN '{platform}'"
                     for platform, prefixes in PLATFORM_PREFIXES.items() for prefix in prefixes)
    return f"(CASE {cases} ELSE '' END)"


class FactRequests:
    """Queues DeviceInformation for hosts, in the caller's transaction, with their push."""

    def __init__(self, commands: CommandStore, events: Events, secrets: SecretBox):
        self._commands = commands
        self._events = events
        self._secrets = secrets

    def ask(self, conn, host_uuids: list[str]) -> int:
        if not host_uuids:
            return 0
        queued = []
        for host in host_uuids:
            command_uuid = mdm_commands.new_command_uuid()
            payload = mdm_commands.device_information(command_uuid, list(QUERIES))
            queued.append((host, command_uuid, mdm_commands.DEVICE_INFORMATION,
                           seal_payload(self._secrets, host, command_uuid, payload)))
        count = self._commands.enqueue(conn, queued, [])
        conn.execute("UPDATE hosts SET facts_requested_at = now() WHERE uuid = ANY(%s)",
                     (host_uuids,))
        for start in range(0, len(host_uuids), REFRESH_BATCH):
            self._events.add(conn, bus.PUSH_REQUESTED,
                             {"host_uuids": sorted(host_uuids[start:start + REFRESH_BATCH])})
        return count


class FactRefresh:
    """Asks enrolled hosts again once their facts are HOST_FACTS_INTERVAL old (or never came):
    REFRESH_BATCH hosts per round, the longest-unasked first; replicas skip each other's rows."""

    def __init__(self, db, requests: FactRequests, interval_seconds: float):
        self._db = db
        self._requests = requests
        self._interval = interval_seconds

    def run_once(self) -> int:
        with self._db.transaction() as conn:
            due = [r["uuid"] for r in conn.execute(
                """SELECT uuid FROM hosts
                   WHERE enrolled AND (facts_requested_at IS NULL
                         OR facts_requested_at < now() - make_interval(secs => %s))
                   ORDER BY facts_requested_at NULLS FIRST LIMIT %s
                   FOR UPDATE SKIP LOCKED""", (self._interval, REFRESH_BATCH)).fetchall()]
            self._requests.ask(conn, due)
        if due:
            log.info("host facts asked", extra={"hosts": len(due)})
        return len(due)

    def periodic_task(self, every_seconds: float) -> PeriodicTask:
        def round_() -> None:
            # Rounds until no host is due, so a backlog (a large fleet's first day) drains.
            while self.run_once() == REFRESH_BATCH:
                pass

        return PeriodicTask("host-facts", every_seconds, round_)
