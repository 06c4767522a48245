"""The reconcile pass: who should have which profile, and sending what is due, in batches.

Several processor replicas may run passes at once: due deliveries are claimed with
FOR UPDATE SKIP LOCKED and moved forward in the same transaction, so each is sent once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from mdmscep_common import bus, fleet_vars, mdm_commands
from mdmscep_common.ca_keys import challenge_context
from mdmscep_common.crypto import SecretBox
from mdmscep_common.logs import register_secret
from mdmscep_common.one_time_codes import code_sha256 as code_hash
from mdmscep_common.outbox import PROFILE_PROCESSOR_OUTBOX, Events, Outbox

from .commander_client import CommanderClient, HostCommand
from .issued_certificates import MAX_SPREAD, renewal_due_at
from .pacing import HORIZON, current_rate, slots_within
from .rendering import CertificateAuthorityForProfile, HostValues, render_for_host
from .store import MAX_ATTEMPTS, DeliveryStore

log = logging.getLogger(__name__)

SEND_BATCH = 1000
PACING_GRACE = timedelta(seconds=0.25)
RENEWALS_PER_PASS = 2000
MAX_CACHED_TEMPLATES = 64
# How long a delivery that reads a host fact the host has not reported waits before it is looked
# at again (host.facts_changed brings it back at once when the facts come).
FACTS_WAIT = 300.0
# A batch goes to the Commander in chunks of this many hosts, rendered while the previous one
# is queued; ENQUEUE_THREADS Commander calls are in flight at once.
ENQUEUE_CHUNK_HOSTS = 250
ENQUEUE_THREADS = 4
_NOT_REPORTED = HostValues()  # a host with no facts yet (frozen: shared)


class Reconciler:
    def __init__(self, db, store: DeliveryStore, commander: CommanderClient, secrets: SecretBox,
                 proxy_public_url: str, code_ttl: float, verify_interval: float,
                 renewal_days: float = 30.0, certificate_wait: float = 3600.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 events: Events | None = None):
        self._db = db
        # The processor's outbox: events commit with the change they announce.
        self._events = events if events is not None else Outbox(PROFILE_PROCESSOR_OUTBOX)
        self._store = store
        self._commander = commander
        self._secrets = secrets
        self._proxy_public_url = proxy_public_url
        self._code_ttl = code_ttl
        self._verify_interval = verify_interval
        self._renewal_days = renewal_days
        self._certificate_wait = certificate_wait
        self.clock = clock  # tests move it to reach renewal dates without waiting
        self._enqueue_pool: futures.ThreadPoolExecutor | None = None
        self._templates: dict[bytes, fleet_vars.ProfileTemplate] = {}
        self._enqueuer_lock = threading.Lock()

    def run_pass(self, scopes: bool = True) -> dict[str, int]:
        """One pass; returns counts for the log. `scopes`: work out who should have what from
        the read models (the fleet-wide statements: a few hundred ms at 100k hosts); without it
        the pass only sends what is due, renews and verifies (ReconcileLoop decides)."""
        counts: dict[str, int] = {}
        if scopes:
            with self._db.transaction() as conn:
                # The scope queries' cost estimates (their subplans) would have PostgreSQL
                # compile them (JIT) each pass, for longer than they run.
                conn.execute("SET LOCAL jit = off")
                counts = {"dropped": self._store.drop_unenrolled(conn),
                          "added": self._store.add_missing_deliveries(conn),
                          "changed": self._store.resend_changed(conn),
                          "removed": self._store.remove_out_of_scope(conn),
                          "no_certificate": self._store.fail_missing_certificates(
                              conn, self._certificate_wait)}
        counts["renewals"] = self.start_renewals()
        sent = 0
        while (batch := self.send_due(SEND_BATCH)) > 0:
            sent += batch
        counts["sent"] = sent
        counts["verify_requests"] = self.request_verification()
        if any(counts.values()):
            log.info("reconcile pass", extra=counts)
        return counts

    def start_renewals(self, limit: int = RENEWALS_PER_PASS) -> int:
        """Re-send SCEP profiles whose certificate is due for renewal (a new one-time code; the
        host's new certificate replaces the old one). Bounded per pass; spread per host. A pass
        that renews announces it (certificates.renewed: admin-config records the activity)."""
        now = self.clock()
        with self._db.transaction() as conn:
            candidates = self._store.renewal_candidates(
                conn, now + timedelta(days=self._renewal_days) + MAX_SPREAD)
            due = []
            for c in candidates:
                at = renewal_due_at(c["not_before"], c["not_after"], self._renewal_days,
                                    f"{c['host_uuid']},{c['profile_uuid']}")
                if at is not None and at <= now:
                    due.append((at, c))
            due.sort(key=lambda item: item[0])
            started = self._store.start_renewals(conn, [c for _, c in due[:limit]])
            if started:
                self._events.add(conn, bus.CERTIFICATES_RENEWED, {
                    "hosts": started, "profile_uuids": sorted({c["profile_uuid"]
                                                              for _, c in due[:limit]})})
        return started

    def seconds_until_due(self, ceiling: float) -> float:
        with self._db.transaction() as conn:
            due = self._store.next_due_at(conn, HORIZON)
        if due is None:
            return ceiling
        return max(0.05, min(ceiling, (due - datetime.now(UTC)).total_seconds()))

    def send_due(self, limit: int) -> int:
        with self._db.transaction() as conn:
            rows = self._store.claim_due(conn, limit)
            exhausted = [r for r in rows if r["attempts"] >= MAX_ATTEMPTS]
            self._store.mark_failed(
                conn, [(r["host_uuid"], r["profile_uuid"]) for r in exhausted],
                [r["detail"] or f"No answer from the host after {MAX_ATTEMPTS} attempts "
                 "(the one-time SCEP code expired each time)" for r in exhausted])
            due = [r for r in rows if r["attempts"] < MAX_ATTEMPTS]
            install_profiles = sorted({r["profile_uuid"] for r in due
                                       if r["operation_type"] == "install"})
            cas = self._store.certificate_authorities_of(conn, install_profiles) \
                if install_profiles else {}
            due, taken = self._pace(conn, due, cas)
            if not due:
                return len(rows)
            queued = sorted({r["profile_uuid"] for r in due} - set(cas) - set(install_profiles))
            if queued:  # taken from a CA's queue (their profiles use that CA)
                cas.update(self._store.certificate_authorities_of(conn, queued))
            batch = self._prepare(conn, due, cas)
            # Inside the transaction: if queueing fails nothing is marked sent, and the
            # Commander is idempotent on command UUIDs if the commit fails after it. A batch is
            # rendered a chunk at a time, and each chunk is queued by the Commander (another
            # process, its own SQL) and recorded here (pipeline mode: sent without waiting for
            # PostgreSQL's answer) while the next one is rendered. All must have succeeded
            # before the commit.
            expires_at = datetime.now(UTC) + timedelta(seconds=self._code_ttl)
            calls = []
            try:
                with conn.pipeline():
                    for chunk in host_chunks(due, ENQUEUE_CHUNK_HOSTS):
                        rendered = batch.render(chunk)
                        if rendered.commands:
                            calls.append(self._enqueuer().submit(self._commander.enqueue,
                                                                 rendered.commands))
                        self._store.wait_for_facts(conn, rendered.waiting, FACTS_WAIT)
                        self._store.mark_sent(conn, rendered.sent, redeliver_after=self._code_ttl)
                        self._store.add_codes(conn, rendered.codes, expires_at)
            finally:
                futures.wait(calls)
            for call in calls:
                call.result()
        return len(rows) + taken

    def _template(self, raw: bytes) -> fleet_vars.ProfileTemplate:
        """A profile is split at its variables once, not once per batch of hosts."""
        template = self._templates.get(raw)
        if template is None:
            if len(self._templates) >= MAX_CACHED_TEMPLATES:
                self._templates.clear()
            template = self._templates[raw] = fleet_vars.ProfileTemplate(raw)
        return template

    def _enqueuer(self) -> futures.ThreadPoolExecutor:
        with self._enqueuer_lock:
            if self._enqueue_pool is None:
                self._enqueue_pool = futures.ThreadPoolExecutor(
                    ENQUEUE_THREADS, thread_name_prefix="commander-enqueue")
            return self._enqueue_pool

    def _pace(self, conn, rows, cas):
        """Spread SCEP deliveries so each CA sees at most its issuance rate, learned from its
        answers (pacing.py), across every replica. Slots are reserved at most HORIZON ahead, at
        the rate of the moment: deliveries beyond wait in the CA's queue, and are taken from it
        as slots come free, so a new rate applies within seconds (slots reserved for a whole
        fleet at once would keep the rate they were reserved at). Deliveries whose turn is later
        wait, saying so in their detail. Returns what to send now (deliveries taken from
        the queues of CAs with free slots included) and how many were taken from a queue."""
        send_now, by_ca = [], {}
        for row in rows:
            profile_cas = cas.get(row["profile_uuid"]) if row["operation_type"] == "install" else None
            if not profile_cas or row["paced_until"] is not None:
                send_now.append(row)  # not a SCEP delivery, or its slot was reserved earlier
                continue
            ca = profile_cas[0]
            by_ca.setdefault(ca["id"], (ca, []))[1].append(row)
        for ca in self._store.cas_with_queue(conn, HORIZON):
            by_ca.setdefault(ca["id"], (ca, []))
        waiting, taken_count = [], 0
        for ca_id in sorted(by_ca):  # one order of the CAs' row locks in every replica
            ca, group = by_ca[ca_id]
            pacing = self._store.lock_pacing(conn, ca_id)
            rate = current_rate(pacing["per_second"], ca)
            start, now = pacing["start"], pacing["now"]
            room = slots_within(start, now, rate)
            queue_until = pacing["queue_until"]
            if room > len(group) and queue_until is not None:
                # Queued deliveries claimed as due are locked by this transaction already, so
                # they may come again: `room` are asked for, at most len(group) of them known.
                # (No queue_until, no queue: store.cas_with_queue. A delivery left queued by a
                # replica whose pass failed comes back through claim_due at its estimate.)
                known = {(r["host_uuid"], r["profile_uuid"]) for r in group}
                taken = [r for r in self._store.take_queued(conn, ca_id, room)
                         if (r["host_uuid"], r["profile_uuid"]) not in known]
                if len(taken) < room - len(group):
                    queue_until = None  # the queue is empty (or the rest is another replica's)
                taken = taken[:room - len(group)]
                taken_count += len(taken)
                group = group + taken
            turn, later = group[:room], group[room:]
            self._store.take_slots(conn, ca_id, len(turn), rate)
            for i, row in enumerate(turn):
                at = start + timedelta(seconds=i / rate)
                if at <= now + PACING_GRACE:
                    send_now.append(row)
                else:
                    waiting.append((row["host_uuid"], row["profile_uuid"], at,
                                    _waiting(ca["name"], at - now, rate)))
            if later or queue_until != pacing["queue_until"]:
                # In line after those already waiting, at the current rate (an estimate).
                tail = max(queue_until or now, start + timedelta(seconds=len(turn) / rate))
                queued = []
                for j, row in enumerate(later):
                    at = tail + timedelta(seconds=j / rate)
                    queued.append((row["host_uuid"], row["profile_uuid"], at,
                                   _waiting(ca["name"], at - now, rate)))
                self._store.queue(conn, ca_id, queued,
                                  tail + timedelta(seconds=len(later) / rate) if later else None)
        self._store.postpone(conn, waiting)
        return send_now, taken_count

    def _challenge(self, ca) -> str:
        """The CA's challenge in clear, masked from now on in this process's log lines (as written
        and as it appears in a rendered profile)."""
        challenge = self._secrets.decrypt(ca["challenge_encrypted"], challenge_context(ca["name"]))
        register_secret(challenge)
        register_secret(fleet_vars.xml_escape(challenge))
        return challenge

    def _prepare(self, conn, rows, cas) -> _BatchRendering:
        """What rendering `rows` needs from the database, read once per batch."""
        installs = [r for r in rows if r["operation_type"] == "install"]
        profile_uuids = sorted({r["profile_uuid"] for r in installs})
        desired = self._store.desired(conn, profile_uuids) if installs else {}
        templates = {uuid: self._template(p["raw"]) for uuid, p in desired.items()}
        challenges = {uuid: [CertificateAuthorityForProfile(ca["name"], self._challenge(ca))
                             for ca in cas.get(uuid, [])] for uuid in profile_uuids}
        reading_facts = {uuid for uuid, t in templates.items()
                         if set(t.occurrences) & set(fleet_vars.HOST_FACT_VARIABLES)}
        host_values = self._store.host_values(
            conn, sorted({r["host_uuid"] for r in installs if r["profile_uuid"] in reading_facts}))
        return _BatchRendering(desired, templates, challenges, reading_facts, host_values,
                               self._proxy_public_url)

    def request_verification(self) -> int:
        """Queue one ProfileList per host due for (re-)verification."""
        with self._db.transaction() as conn:
            hosts = self._store.hosts_to_verify(conn, self._verify_interval,
                                                lost_after=self._code_ttl, limit=5000)
            return queue_profile_lists(conn, self._store, self._commander, hosts)


class RenderedChunk(NamedTuple):
    """A chunk's commands and what the transaction records of them: the sends, the one-time
    codes' hashes and the deliveries left waiting for host facts."""
    commands: list[HostCommand]
    sent: list[dict]
    codes: list[tuple[bytes, str, str, str, str]]
    waiting: list[tuple[str, str, str]]


@dataclass(frozen=True)
class _BatchRendering:
    """A batch's commands, rendered a chunk at a time from what was read once for the batch."""

    _desired: dict[str, dict]
    _templates: dict[str, fleet_vars.ProfileTemplate]
    _challenges: dict[str, list[CertificateAuthorityForProfile]]
    _reading_facts: set[str]
    _host_values: dict[str, HostValues]
    _proxy_public_url: str

    def render(self, rows) -> RenderedChunk:
        chunk = RenderedChunk([], [], [], [])
        for row in rows:
            command_uuid = mdm_commands.new_command_uuid()
            install = row["operation_type"] == "install"
            host = self._host_values.get(row["host_uuid"], _NOT_REPORTED)
            if install and row["profile_uuid"] in self._reading_facts:
                missing = _missing_facts(self._templates[row["profile_uuid"]], host)
                if missing:  # host.facts_changed sends it at once when they come
                    chunk.waiting.append((row["host_uuid"], row["profile_uuid"],
                                          f"Waiting for the host to report its {missing} "
                                          "(DeviceInformation)"))
                    continue
            if not install:
                payload = mdm_commands.remove_profile(command_uuid, row["identifier"])
                request_type, revision = mdm_commands.REMOVE_PROFILE, None
            else:
                profile = self._desired.get(row["profile_uuid"])
                if profile is None:
                    continue  # deleted meanwhile; the next pass turns it into a removal
                rendered = render_for_host(self._templates[row["profile_uuid"]], row["host_uuid"],
                                           row["profile_uuid"], self._challenges[row["profile_uuid"]],
                                           self._proxy_public_url, host)
                payload = mdm_commands.install_profile(command_uuid, rendered.payload)
                request_type, revision = mdm_commands.INSTALL_PROFILE, profile["revision"]
                chunk.codes.extend((code_hash(code), row["host_uuid"], row["profile_uuid"],
                                    ca_name, command_uuid) for ca_name, code in rendered.codes)
            chunk.commands.append(HostCommand(row["host_uuid"], command_uuid, request_type,
                                              payload, row["command_uuid"] or ""))
            chunk.sent.append({"host_uuid": row["host_uuid"], "profile_uuid": row["profile_uuid"],
                               "command_uuid": command_uuid, "revision": revision})
        return chunk


def host_chunks(rows, hosts_per_chunk: int) -> list[list]:
    """`rows` in chunks of the rows of at most `hosts_per_chunk` hosts, a host's rows all in one
    chunk and in their order: chunks are queued concurrently, and a host's commands must run in
    the order they were claimed (a removal before the install of a profile with its
    identifier)."""
    chunk_of: dict[str, int] = {}
    chunks: list[list] = []
    for row in rows:
        index = chunk_of.setdefault(row["host_uuid"], len(chunk_of) // hosts_per_chunk)
        if index == len(chunks):
            chunks.append([])
        chunks[index].append(row)
    return chunks


def _missing_facts(template: fleet_vars.ProfileTemplate, host: HostValues) -> str:
    """The host facts the profile reads that the host has not reported yet ("" if none)."""
    used = set(template.occurrences)
    missing = [what for variable, what, value in (
        (fleet_vars.HOST_HARDWARE_SERIAL, "serial number", host.serial_number),
        (fleet_vars.HOST_PLATFORM, "platform", host.platform)) if variable in used and not value]
    return " and ".join(missing)


def _waiting(ca_name: str, wait: timedelta, rate: float) -> str:
    return (f"Waiting for its turn at certificate authority {ca_name} (about "
            f"{wait.total_seconds():.0f} s; now {rate:.3g} certificates/s, learned from its answers)")


def queue_profile_lists(conn, store: DeliveryStore, commander: CommanderClient,
                        hosts: list[str]) -> int:
    """One ProfileList per host, and a CertificateList for hosts with SCEP deliveries: their
    answers verify the installed deliveries (a SCEP profile needs its certificate too)."""
    if not hosts:
        return 0
    by_host = {h: mdm_commands.new_command_uuid() for h in hosts}
    # A host that never answers keeps one ProfileList queued, not one per check.
    previous = store.previous_verify_commands(conn, hosts)
    commands = [HostCommand(h, c, mdm_commands.PROFILE_LIST, mdm_commands.profile_list(c),
                            previous.get(h, ""))
                for h, c in by_host.items()]
    for host in sorted(store.has_scep_deliveries(conn, hosts)):
        command_uuid = mdm_commands.new_command_uuid()
        commands.append(HostCommand(host, command_uuid, mdm_commands.CERTIFICATE_LIST,
                                    mdm_commands.certificate_list(command_uuid)))
    commander.enqueue(commands)
    store.verification_requested(conn, by_host)
    return len(hosts)
