"""Certificates delivered to hosts, as admins look for them. host_certificates is the
profile-processor's (DeliveryDirectory.ListCertificates); the profile names are admin-config's."""

from __future__ import annotations

from typing import Any

from mdmscep_common.timefmt import rfc3339

from .delivery_directory_client import DeliveryDirectoryClient, HostCertificate
from .errors import BadRequest
from .host_registry_client import HostRegistryClient
from .hosts import require_host
from .store import ProfileStore


def _public(certificate: HostCertificate, names: dict[str, str]) -> dict[str, Any]:
    return {"host_uuid": certificate.host_uuid, "profile_uuid": certificate.profile_uuid,
            "profile_name": names.get(certificate.profile_uuid, ""), "serial": certificate.serial,
            "subject": certificate.subject, "issuer": certificate.issuer,
            "not_before": rfc3339(certificate.not_before),
            "not_after": rfc3339(certificate.not_after)}


class CertificateDirectory:
    def __init__(self, db, store: ProfileStore, registry: HostRegistryClient,
                 deliveries: DeliveryDirectoryClient):
        self._db = db
        self._store = store
        self._registry = registry
        self._deliveries = deliveries

    def for_host(self, host_uuid: str) -> list[dict[str, Any]]:
        require_host(self._registry, host_uuid)
        return self._with_names(self._deliveries.certificates_of_host(host_uuid))

    def expiring(self, within_days: str | None, page: int,
                 per_page: int) -> tuple[list[dict[str, Any]], int]:
        days = None
        if within_days not in (None, ""):
            try:
                days = float(within_days)
            except ValueError:
                days = -1
            if not 0 <= days <= 36500:
                raise BadRequest("expiring_within_days must be a number of days (0-36500)",
                                 [{"name": "expiring_within_days", "reason": "not a number of days"}])
        certificates, total = self._deliveries.certificates(days, page, per_page)
        return self._with_names(certificates), total

    def _with_names(self, certificates: list[HostCertificate]) -> list[dict[str, Any]]:
        """Each certificate with the current name of its profile ("" once the profile is gone)."""
        names = self._store.current_names(self._db, [c.profile_uuid for c in certificates])
        return [_public(c, names) for c in certificates]
