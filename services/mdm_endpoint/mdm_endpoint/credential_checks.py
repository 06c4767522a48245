"""Checks of the two certificates mdm-endpoint reads from files, the push certificate and the
device identity CA: one about to expire is published as `credential.expiring` (through the
outbox; the relay of `mdm-endpoint grpc` declares admin-config's queue before it publishes)."""

from __future__ import annotations

from datetime import UTC, datetime

from mdmscep_common import bus
from mdmscep_common.credentials import (
    IDENTITY_CA,
    PUSH_CERTIFICATE,
    Credential,
    CredentialMonitor,
    credentials_from_file,
)
from mdmscep_common.outbox import Events
from mdmscep_common.timefmt import rfc3339

from .settings import MdmEndpointSettings


def credential_event(credential: Credential, now: datetime | None = None) -> dict[str, object]:
    """Body of `credential.expiring` (admin-config records it as a `credential_expiring`
    activity, once per certificate)."""
    now = now or datetime.now(UTC)
    return {"kind": credential.kind, "name": credential.name, "subject": credential.subject,
            "not_after": rfc3339(credential.not_after),
            "days_left": round(credential.days_left(now), 1),
            "fingerprint": credential.fingerprint}


def file_credential_monitor(settings: MdmEndpointSettings, db, events: Events) -> CredentialMonitor:
    """APNS_CERT and MDM_IDENTITY_CA_CERTS, when set; an expiring one is published as
    `credential.expiring` (activities belong to admin-config)."""
    sources = {}
    if settings.apns_cert:
        sources[PUSH_CERTIFICATE] = lambda: credentials_from_file(
            PUSH_CERTIFICATE, "APNS_CERT", settings.apns_cert)
    if settings.mdm_identity_ca_certs:
        sources[IDENTITY_CA] = lambda: credentials_from_file(
            IDENTITY_CA, "MDM_IDENTITY_CA_CERTS", settings.mdm_identity_ca_certs, name_each=True)

    def expiring(credential: Credential) -> None:
        with db.transaction() as conn:
            events.add(conn, bus.CREDENTIAL_EXPIRING, credential_event(credential))

    return CredentialMonitor(sources, settings.credential_warning_days, expiring)
