"""Certificate inventory and renewal policy: which reported certificate belongs to which delivered
SCEP profile, and when it is due for renewal. No database or network here."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mdmscep_common import fleet_vars

MIN_RENEWABLE_VALIDITY = timedelta(days=2)
MAX_SPREAD = timedelta(days=7)


@dataclass(frozen=True)
class ScepDelivery:
    """A host's delivered SCEP profile and what its certificate must look like."""
    profile_uuid: str
    ca_certificates: list[x509.Certificate]
    uses_renewal_id: bool


@dataclass(frozen=True)
class HeldCertificate:
    profile_uuid: str
    sha256: bytes
    serial: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime


def load_ca_certificates(pem: str) -> list[x509.Certificate]:
    try:
        return list(x509.load_pem_x509_certificates(pem.encode())) if pem.strip() else []
    except ValueError:
        return []


def uses_renewal_id(raw_profile: bytes) -> bool:
    return any(name in fleet_vars.RENEWAL_IDS
               for name in fleet_vars.ProfileTemplate(raw_profile).occurrences)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME)
            for a in cert.subject.get_attributes_for_oid(oid)]


def match_certificates(reported: list[dict], deliveries: list[ScepDelivery]) -> list[HeldCertificate]:
    """Certificates from a CertificateList (`data` base64 DER) that belong to the deliveries: issued
    (and signed) by the profile's CA and, when the profile used the renewal id, carrying
    `fleet-<profile_uuid>` in CN or OU."""
    held = []
    for entry in reported:
        try:
            der = base64.b64decode(entry.get("data") or "", validate=True)
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, TypeError):
            continue
        for delivery in deliveries:
            if not any(_issued_by(cert, ca) for ca in delivery.ca_certificates):
                continue
            if delivery.uses_renewal_id and \
                    fleet_vars.renewal_id(delivery.profile_uuid) not in " ".join(_names(cert)):
                continue
            held.append(HeldCertificate(
                delivery.profile_uuid, hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(),
                format(cert.serial_number, "x"), cert.subject.rfc4514_string(),
                cert.issuer.rfc4514_string(), cert.not_valid_before_utc, cert.not_valid_after_utc))
    return held


def renewal_due_at(not_before: datetime, not_after: datetime, renewal_days: float,
                   spread_key: str) -> datetime | None:
    """When to renew: `renewal_days` before expiry, or at half the validity when the validity is
    that short or shorter; never for certificates valid under 2 days. A stable per-host offset
    (up to an eighth of the window, at most 7 days) spreads renewals of certificates issued
    together, so the CA is not hit by the whole fleet at once."""
    validity = not_after - not_before
    if validity < MIN_RENEWABLE_VALIDITY:
        return None
    window = timedelta(days=renewal_days)
    if validity <= window:
        window = validity / 2
    spread = min(window / 8, MAX_SPREAD)
    fraction = int.from_bytes(hashlib.sha256(spread_key.encode()).digest()[:4], "big") / 2**32
    return not_after - window - spread * fraction
