"""admin-config's background duties, run by `admin-config worker` (never in the gunicorn workers
of `admin-config serve`): the daily check of each custom CA's certificate, the
`credential_expiring` activity (for those, and for the `credential.expiring` events mdm-endpoint
publishes about the push certificate and the identity CA, each handled once: admin_config_inbox),
the consumer of `admin_config.events` (those, and profile-processor's `certificates.renewed`:
renewal_activities.py), and the retention of activities and of the inbox. activities and
certificate_authorities are this service's tables, so this is where they are read for these
checks and written. The API's `/healthz` lists the same custom-CA warnings, read when asked
(CustomCaWarnings).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from mdmscep_common import bus, work_queues
from mdmscep_common.credentials import (
    CUSTOM_CA,
    IDENTITY_CA,
    PUSH_CERTIFICATE,
    Credential,
    CredentialMonitor,
    CredentialUnreadable,
    credentials_from_pem,
)
from mdmscep_common.inbox import ADMIN_CONFIG_INBOX, Inbox
from mdmscep_common.inbox import retention_rule as inbox_retention_rule
from mdmscep_common.retention import PeriodicTask, RetentionRule, days, pruning_task
from mdmscep_common.timefmt import rfc3339

from .renewal_activities import certificates_renewed_handler
from .settings import AdminConfigSettings

log = logging.getLogger(__name__)

CREDENTIAL_EXPIRING = "credential_expiring"
SYSTEM_ACTOR = "mdmscep"
KINDS = {PUSH_CERTIFICATE, IDENTITY_CA, CUSTOM_CA}
# Serializes the check-then-insert of credential_expiring across processes ("mdmscep creds").
_ACTIVITY_LOCK = 0x6D646D7363726501
# Reminders: one activity per certificate when it enters the warning window, then again at 7
# days, 1 day and once expired.
_REMINDERS = (1.0, 7.0)


def activity_rules(retention_days: float) -> list[RetentionRule]:
    return [RetentionRule("activities", "created_at < %(cutoff)s", days(retention_days))]


def retention_rules(settings: AdminConfigSettings) -> list[RetentionRule]:
    """What the worker prunes on its timer and `admin-config prune` at once: activities past
    ACTIVITY_RETENTION_DAYS and the inbox's event ids past theirs (the outbox's published rows
    are its relay's)."""
    return [*activity_rules(settings.activity_retention_days),
            inbox_retention_rule(ADMIN_CONFIG_INBOX)]


def stage(days_left: float, warning_days: float) -> str:
    """Which reminder a certificate this close to expiry is due: "30d", "7d", "1d", "expired"."""
    if days_left <= 0:
        return "expired"
    for limit in _REMINDERS:
        if days_left <= limit < warning_days:
            return f"{limit:g}d"
    return f"{warning_days:g}d"


def record_credential_expiring(db, details: dict[str, Any], warning_days: float) -> bool:
    """Record the activity unless this certificate already has one for this reminder stage
    (every admin-config worker and every mdm-endpoint worker reports the same certificates)."""
    details = {**details, "stage": stage(float(details["days_left"]), warning_days)}
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ACTIVITY_LOCK,))
        recorded = conn.execute(
            """INSERT INTO activities (type, actor, details)
               SELECT %(type)s, %(actor)s, %(details)s
               WHERE NOT EXISTS (SELECT 1 FROM activities WHERE type = %(type)s
                                 AND details->>'fingerprint' = %(fingerprint)s
                                 AND details->>'stage' = %(stage)s)""",
            {"type": CREDENTIAL_EXPIRING, "actor": SYSTEM_ACTOR, "details": Jsonb(details),
             "fingerprint": details["fingerprint"], "stage": details["stage"]}).rowcount
    if recorded:
        log.info("activity recorded", extra={"type": CREDENTIAL_EXPIRING, "kind": details["kind"],
                                             "credential": details["name"],
                                             "stage": details["stage"]})
    return bool(recorded)


def credential_details(credential: Credential, days_left: float) -> dict[str, Any]:
    return {"kind": credential.kind, "name": credential.name, "subject": credential.subject,
            "not_after": rfc3339(credential.not_after), "days_left": round(days_left, 1),
            "fingerprint": credential.fingerprint}


def custom_ca_credentials(db) -> list[Credential]:
    """Every certificate GetCACert returned for each custom CA when it was saved."""
    with db.transaction() as conn:
        rows = conn.execute("SELECT name, ca_certificates_pem FROM certificate_authorities "
                            "ORDER BY id").fetchall()
    out: list[Credential] = []
    for row in rows:
        if not row["ca_certificates_pem"]:
            continue
        try:
            out += credentials_from_pem(CUSTOM_CA, row["name"], row["ca_certificates_pem"].encode())
        except CredentialUnreadable:
            log.warning("stored CA certificates unreadable", extra={"ca": row["name"]})
    return out


def custom_ca_monitor(db, warning_days: float) -> CredentialMonitor:
    def expiring(credential: Credential) -> None:
        record_credential_expiring(
            db, credential_details(credential, credential.days_left(datetime.now(UTC))),
            warning_days)

    return CredentialMonitor({CUSTOM_CA: lambda: custom_ca_credentials(db)}, warning_days,
                             expiring)


class CustomCaWarnings:
    """The `/healthz` warnings of `admin-config serve`: custom CA certificates within the warning
    window, read from certificate_authorities when asked (at most every `cache_seconds`). Only
    the worker's checks log, set the expiry gauge and record activities."""

    def __init__(self, db, warning_days: float, cache_seconds: float = 60.0):
        self._db = db
        self._warning_days = warning_days
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._warnings: list[dict[str, Any]] = []
        self._fresh_until = float("-inf")

    def __call__(self) -> list[dict[str, Any]]:
        with self._lock:
            if time.monotonic() < self._fresh_until:
                return list(self._warnings)
        try:
            credentials = custom_ca_credentials(self._db)
        except (psycopg.Error, PoolTimeout):
            credentials = None  # the database check of /healthz says so; keep the last answer
        now = datetime.now(UTC)
        with self._lock:
            if credentials is not None:
                self._warnings = [c.warning(now) for c in credentials
                                  if c.days_left(now) <= self._warning_days]
                self._fresh_until = time.monotonic() + self._cache_seconds
            return list(self._warnings)


def credential_event_handler(db, warning_days: float):
    """`credential.expiring` from mdm-endpoint (push certificate, identity CA) → activity, once
    per event (admin_config_inbox)."""
    inbox = Inbox(db, ADMIN_CONFIG_INBOX)

    def handle(body: dict[str, Any], _delivery: bus.Delivery) -> None:
        try:
            details = {key: body[key] for key in ("kind", "name", "subject", "not_after",
                                                   "fingerprint")}
            details["days_left"] = round(float(body["days_left"]), 1)
        except (KeyError, TypeError, ValueError) as exc:
            raise bus.PoisonMessage(f"credential.expiring without a usable {exc}") from None
        if details["kind"] not in KINDS or not all(isinstance(details[k], str) and details[k]
                                                   for k in ("name", "fingerprint", "not_after")):
            raise bus.PoisonMessage("credential.expiring with an unknown kind or empty fields")
        inbox.handle(body, lambda tx: record_credential_expiring(tx, details, warning_days))
    return handle


def admin_config_events_handler(db, warning_days: float) -> bus.Handler:
    """What other services report for the activity feed, by routing key (admin_config.events)."""
    handlers = {bus.CREDENTIAL_EXPIRING: credential_event_handler(db, warning_days),
                bus.CERTIFICATES_RENEWED: certificates_renewed_handler(db)}

    def handle(body: dict[str, Any], delivery: bus.Delivery) -> None:
        handler = handlers.get(delivery.routing_key)
        if handler is None:
            raise bus.PoisonMessage(f"unexpected routing key {delivery.routing_key}")
        handler(body, delivery)
    return handle


@dataclass
class Background:
    """What `admin-config worker` runs besides relaying the outbox."""

    credentials: CredentialMonitor
    tasks: list[PeriodicTask] = field(default_factory=list)
    worker: bus.Worker | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Background:
        for task in self.tasks:
            task.start()
        if self.worker is not None:
            self._thread = threading.Thread(target=self.worker.run, name="admin-config-events",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        for task in self.tasks:
            task.stop(timeout=5)
        if self.worker is not None:
            self.worker.stop()
        if self._thread is not None:
            self._thread.join(5)


def background(settings: AdminConfigSettings, db) -> Background:
    """Custom-CA checks at start and every CREDENTIAL_CHECK_INTERVAL; activities past
    ACTIVITY_RETENTION_DAYS pruned every PRUNE_INTERVAL (one small indexed delete: a thread here
    works in every deployment, where a CronJob would need its own manifest and nothing under
    `make run`), and so are admin_config_inbox rows past their retention; credential.expiring
    and certificates.renewed events consumed from admin_config.events."""
    monitor = custom_ca_monitor(db, settings.credential_warning_days)
    queue = work_queues.admin_config_events()
    worker = bus.Worker(settings.amqp_url, {queue.name: (
        queue, admin_config_events_handler(db, settings.credential_warning_days))}, prefetch=4)
    return Background(monitor, [
        monitor.periodic_task(settings.credential_check_interval),
        pruning_task(db, retention_rules(settings), settings.prune_interval,
                     settings.prune_batch_size),
    ], worker)
