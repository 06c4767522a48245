"""The reconcile pass: who should have which profile, and sending what is due, in batches.

Several processor replicas may run passes at once: due deliveries are claimed with
FOR UPDATE SKIP LOCKED and moved forward in the same transaction, so each is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mdmscep_common import fleet_vars, mdm_commands
from mdmscep_common.crypto import SecretBox

from .certificates import MAX_SPREAD, renewal_due_at
from .commander_client import CommanderClient, HostCommand
from .rendering import CertificateAuthorityForProfile, code_hash, render_for_host
from .store import MAX_ATTEMPTS, DeliveryStore

log = logging.getLogger(__name__)

SEND_BATCH = 500
RENEWALS_PER_PASS = 2000


def challenge_context(name: str) -> bytes:
    # Must match admin-config's associated data for a CA's challenge.
    return b"certificate_authorities.challenge:" + name.encode("utf-8")


class Reconciler:
    def __init__(self, db, store: DeliveryStore, commander: CommanderClient, secrets: SecretBox,
                 proxy_public_url: str, code_ttl: float, verify_interval: float,
                 renewal_days: float = 30.0, certificate_wait: float = 3600.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._db = db
        self._store = store
        self._commander = commander
        self._secrets = secrets
        self._proxy_public_url = proxy_public_url
        self._code_ttl = code_ttl
        self._verify_interval = verify_interval
        self._renewal_days = renewal_days
        self._certificate_wait = certificate_wait
        self.clock = clock  # tests move it to reach renewal dates without waiting

    def run_pass(self) -> dict[str, int]:
        """One full pass; returns counts for the log."""
        with self._db.transaction() as conn:
            counts = {"dropped": self._store.drop_unenrolled(conn),
                      "added": self._store.add_missing_deliveries(conn),
                      "changed": self._store.resend_changed(conn),
                      "removed": self._store.remove_deleted(conn),
                      "no_certificate": self._store.fail_missing_certificates(
                          conn, self._certificate_wait)}
            self._store.purge_expired_codes(conn, older_than_seconds=86_400)
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
        host's new certificate replaces the old one). Bounded per pass; spread per host."""
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
                self._store.record_activity(conn, "renewed_certificates", {
                    "hosts": started, "profile_uuids": sorted({c["profile_uuid"]
                                                              for _, c in due[:limit]})})
        return started

    def seconds_until_due(self, ceiling: float) -> float:
        with self._db.transaction() as conn:
            due = self._store.next_due_at(conn)
        if due is None:
            return ceiling
        return max(0.05, min(ceiling, (due - datetime.now(UTC)).total_seconds()))

    def send_due(self, limit: int) -> int:
        with self._db.transaction() as conn:
            rows = self._store.claim_due(conn, limit)
            if not rows:
                return 0
            exhausted = [r for r in rows if r["attempts"] >= MAX_ATTEMPTS]
            self._store.mark_failed(
                conn, [(r["host_uuid"], r["profile_uuid"]) for r in exhausted],
                [r["detail"] or f"No answer from the host after {MAX_ATTEMPTS} attempts "
                 "(the one-time SCEP code expired each time)" for r in exhausted])
            due = [r for r in rows if r["attempts"] < MAX_ATTEMPTS]
            commands, sent, codes = self._build(conn, due)
            if commands:
                # Inside the transaction: if queueing fails nothing is marked sent, and the
                # Commander is idempotent on command UUIDs if the commit fails after it.
                self._commander.enqueue(commands)
            self._store.mark_sent(conn, sent, redeliver_after=self._code_ttl)
            self._store.add_codes(conn, codes,
                                  datetime.now(UTC) + timedelta(seconds=self._code_ttl))
        return len(rows)

    def _build(self, conn, rows):
        installs = [r for r in rows if r["operation_type"] == "install"]
        profile_uuids = sorted({r["profile_uuid"] for r in installs})
        desired = self._store.desired(conn, profile_uuids) if installs else {}
        cas = self._store.certificate_authorities_of(conn, profile_uuids) if installs else {}
        templates = {uuid: fleet_vars.ProfileTemplate(p["raw"]) for uuid, p in desired.items()}
        challenges = {uuid: [CertificateAuthorityForProfile(
            ca["name"], self._secrets.decrypt(ca["challenge_encrypted"], challenge_context(ca["name"])))
            for ca in cas.get(uuid, [])] for uuid in profile_uuids}
        commands, sent, codes = [], [], []
        for row in rows:
            command_uuid = mdm_commands.new_command_uuid()
            if row["operation_type"] == "remove":
                payload = mdm_commands.remove_profile(command_uuid, row["identifier"])
                request_type, revision = mdm_commands.REMOVE_PROFILE, None
            else:
                profile = desired.get(row["profile_uuid"])
                if profile is None:
                    continue  # deleted meanwhile; the next pass turns it into a removal
                rendered = render_for_host(templates[row["profile_uuid"]], row["host_uuid"],
                                           row["profile_uuid"], challenges[row["profile_uuid"]],
                                           self._proxy_public_url)
                payload = mdm_commands.install_profile(command_uuid, rendered.payload)
                request_type, revision = mdm_commands.INSTALL_PROFILE, profile["revision"]
                codes += [(code_hash(code), row["host_uuid"], row["profile_uuid"], ca_name,
                           command_uuid) for ca_name, code in rendered.codes]
            commands.append(HostCommand(row["host_uuid"], command_uuid, request_type, payload,
                                        row["command_uuid"] or ""))
            sent.append({"host_uuid": row["host_uuid"], "profile_uuid": row["profile_uuid"],
                         "command_uuid": command_uuid, "revision": revision})
        return commands, sent, codes

    def request_verification(self) -> int:
        """Queue one ProfileList per host due for (re-)verification."""
        with self._db.transaction() as conn:
            hosts = self._store.hosts_to_verify(conn, self._verify_interval,
                                                lost_after=self._code_ttl, limit=5000)
            return queue_profile_lists(conn, self._store, self._commander, hosts)


def queue_profile_lists(conn, store: DeliveryStore, commander: CommanderClient,
                        hosts: list[str]) -> int:
    """One ProfileList per host, and a CertificateList for hosts with SCEP deliveries: their
    answers verify the installed deliveries (a SCEP profile needs its certificate too)."""
    if not hosts:
        return 0
    by_host = {h: mdm_commands.new_command_uuid() for h in hosts}
    commands = [HostCommand(h, c, mdm_commands.PROFILE_LIST, mdm_commands.profile_list(c))
                for h, c in by_host.items()]
    for host in sorted(store.has_scep_deliveries(conn, hosts)):
        command_uuid = mdm_commands.new_command_uuid()
        commands.append(HostCommand(host, command_uuid, mdm_commands.CERTIFICATE_LIST,
                                    mdm_commands.certificate_list(command_uuid)))
    commander.enqueue(commands)
    store.verification_requested(conn, by_host)
    return len(hosts)
