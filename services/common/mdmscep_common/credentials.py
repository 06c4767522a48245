"""Expiring credentials: certificates the stack depends on (the APNs push certificate, the device
identity CA, each custom SCEP CA) are checked at start and then daily. Within the warning window
(CREDENTIAL_WARNING_DAYS, 30 by default) each one gives a warning in `/healthz` (the status stays
200: it is a warning), a log line, the metric `mdmscep_credential_expiry_days` (always set) and an
`expiring` callback, which records the `credential_expiring` activity (directly in admin-config,
through a `credential.expiring` event elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from . import metrics
from .timefmt import rfc3339

log = logging.getLogger(__name__)

PUSH_CERTIFICATE = "push_certificate"
IDENTITY_CA = "identity_ca"
CUSTOM_CA = "custom_ca"

KIND_TEXT = {PUSH_CERTIFICATE: "APNs push certificate", IDENTITY_CA: "device identity CA",
             CUSTOM_CA: "custom SCEP CA"}


@dataclass(frozen=True)
class Credential:
    """One certificate: `name` is what an operator knows it by (the variable naming its file, or
    the CA's name), never anything secret."""

    kind: str
    name: str
    subject: str
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER, hex

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def log_fields(self, now: datetime) -> dict[str, object]:
        # `name` is reserved in log records.
        return {"kind": self.kind, "credential": self.name, "subject": self.subject,
                "not_after": rfc3339(self.not_after), "days_left": round(self.days_left(now), 1)}

    def warning(self, now: datetime) -> dict[str, object]:
        days = self.days_left(now)
        when = f"expired {-days:.0f} days ago" if days < 0 else f"expires in {days:.0f} days"
        return {"kind": self.kind, "name": self.name, "subject": self.subject,
                "not_after": rfc3339(self.not_after), "days_left": round(days, 1),
                "fingerprint": self.fingerprint,
                "message": f"{KIND_TEXT.get(self.kind, self.kind)} {self.name} {when} "
                           f"({rfc3339(self.not_after)})"}


class CredentialUnreadable(Exception):
    """A configured certificate file or stored PEM cannot be read."""


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def credentials_from_pem(kind: str, name: str, pem: bytes,
                         name_each: bool = False) -> list[Credential]:
    """Every certificate in a PEM bundle; `name_each`: name each after its common name (a bundle
    of several identity CAs), else all share `name`."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CredentialUnreadable(f"{name}: no readable certificate ({exc})") from None
    return [Credential(kind, _common_name(c) if name_each else name, _common_name(c),
                       c.not_valid_after_utc,
                       hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest())
            for c in certs]


def credentials_from_file(kind: str, name: str, path: str, name_each: bool = False) -> list[Credential]:
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise CredentialUnreadable(f"{name}: {path}: {exc.strerror}") from None
    return credentials_from_pem(kind, name, pem, name_each)


Source = Callable[[], list[Credential]]
Expiring = Callable[[Credential], None]


class CredentialMonitor:
    """Checks its sources (each a kind and a function listing its certificates), keeps the last
    result for `/healthz`, sets the expiry gauge, logs and reports what expires within
    `warning_days`. `check()` runs once; `periodic_task()` runs it at start and every interval."""

    def __init__(self, sources: dict[str, Source], warning_days: float,
                 expiring: Expiring | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._sources = sources
        self._warning_days = warning_days
        self._expiring = expiring
        self._clock = clock
        self._lock = threading.Lock()
        self._warnings: list[dict[str, object]] = []
        self._gauged: set[tuple[str, str]] = set()

    def check(self) -> list[Credential]:
        """One check of every source; returns the credentials within the warning window."""
        now = self._clock()
        warnings: list[dict[str, object]] = []
        expiring: list[Credential] = []
        for kind, source in self._sources.items():
            try:
                credentials = source()
            except CredentialUnreadable as exc:
                metrics.CREDENTIAL_CHECK_FAILURES.labels(kind).inc()
                log.error("credential check failed", extra={"kind": kind, "error": str(exc)})
                warnings.append({"kind": kind, "message": f"cannot check {KIND_TEXT.get(kind, kind)}: "
                                                           f"{exc}"})
                continue
            soonest: dict[str, float] = {}
            for credential in credentials:
                days = credential.days_left(now)
                soonest[credential.name] = min(days, soonest.get(credential.name, days))
                if days <= self._warning_days:
                    expiring.append(credential)
                    warnings.append(credential.warning(now))
            for name, days in soonest.items():
                metrics.CREDENTIAL_EXPIRY_DAYS.labels(kind, name).set(round(days, 3))
            self._forget_gone(kind, set(soonest))
        with self._lock:
            self._warnings = warnings
        for credential in expiring:
            log.warning("credential expiring: renew it (docs/operations.md)",
                        extra=credential.log_fields(now))
            if self._expiring is not None:
                try:
                    self._expiring(credential)
                except Exception:  # noqa: BLE001 - reporting must not stop the check
                    log.exception("could not report an expiring credential",
                                  extra={"kind": credential.kind, "credential": credential.name})
        return expiring

    def _forget_gone(self, kind: str, names: set[str]) -> None:
        """Drop the gauge of credentials that are gone (a deleted CA, a replaced bundle); in
        multiprocess mode series cannot be removed: they go with the next restart."""
        if metrics.multiprocess_dir():
            return
        for gone in {n for k, n in self._gauged if k == kind} - names:
            try:
                metrics.CREDENTIAL_EXPIRY_DAYS.remove(kind, gone)
            except KeyError:
                pass
            self._gauged.discard((kind, gone))
        self._gauged |= {(kind, n) for n in names}

    def warnings(self) -> list[dict[str, object]]:
        with self._lock:
            return list(self._warnings)

    def periodic_task(self, interval: float):
        from .retention import PeriodicTask

        return PeriodicTask("credential-check", interval, self.check)
