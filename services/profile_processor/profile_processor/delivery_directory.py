"""gRPC DeliveryDirectory: what admin-config shows admins about deliveries (a profile on a host)
and the certificates hosts hold. The processor owns both; this answers reads only."""

from __future__ import annotations

import grpc

from mdmscep.v1 import delivery_directory_pb2, delivery_directory_pb2_grpc
from mdmscep_common.proxy_urls import CA_NAME

from .pacing import IssuancePacing, IssuanceRate
from .store import CertificateRecord, DeliveryDirectoryStore, DeliveryRecord

STATUSES = ("pending", "verifying", "verified", "failed")
MAX_PER_PAGE = 1000
MAX_HOST_UUIDS = 1000
MAX_EXPIRING_DAYS = 36_500


class InvalidRequest(ValueError):
    """A request the directory cannot answer as asked (INVALID_ARGUMENT)."""


class UnknownCertificateAuthority(LookupError):
    """No such CA in the processor's read model (NOT_FOUND)."""


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")


def _offset(page: int, per_page: int) -> int:
    if page < 0:
        raise InvalidRequest("page starts at 0")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page is 1 to {MAX_PER_PAGE}")
    return page * per_page


class DeliveryDirectory:
    """The directory's logic (no gRPC types); absent filters are None."""

    def __init__(self, db, store: DeliveryDirectoryStore | None = None):
        self._db = db
        self._store = store or DeliveryDirectoryStore()

    def count(self, profile_uuid: str | None, host_uuid: str | None,
              paced_ca_name: str | None) -> dict[str, int]:
        """Deliveries by status: a profile's installs, a host's all, or a CA's paced ones."""
        if sum(x is not None for x in (profile_uuid, host_uuid, paced_ca_name)) != 1:
            raise InvalidRequest("exactly one of profile_uuid, host_uuid and paced_ca_name")
        if paced_ca_name is not None and not CA_NAME.fullmatch(paced_ca_name):
            raise InvalidRequest("paced_ca_name must be a CA name")
        with self._db.transaction() as conn:
            if profile_uuid is not None:
                return self._store.install_counts_of_profile(conn, profile_uuid)
            if host_uuid is not None:
                return self._store.counts_of_host(conn, host_uuid)
            return self._store.paced_counts_of_ca(conn, paced_ca_name)

    def deliveries(self, profile_uuid: str | None, host_uuid: str | None, status: str | None,
                   page: int, per_page: int) -> tuple[list[DeliveryRecord], int]:
        """A profile's deliveries by host UUID, one page; or a host's, all, as created."""
        if (profile_uuid is None) == (host_uuid is None):
            raise InvalidRequest("exactly one of profile_uuid and host_uuid")
        _check_status(status)
        if profile_uuid is not None:
            offset = _offset(page, per_page)
            with self._db.transaction() as conn:
                return self._store.deliveries_of_profile(conn, profile_uuid, status, per_page,
                                                         offset)
        with self._db.transaction() as conn:
            rows = self._store.deliveries_of_host(conn, host_uuid, status)
        return rows, len(rows)

    def hosts_with_deliveries(self, profile_uuid: str | None, status: str | None,
                              host_uuids: list[str], page: int,
                              per_page: int) -> tuple[list[str], int]:
        if profile_uuid is None and status is None:
            raise InvalidRequest("profile_uuid or status (or both) is required")
        _check_status(status)
        if len(host_uuids) > MAX_HOST_UUIDS:
            raise InvalidRequest(f"at most {MAX_HOST_UUIDS} host_uuids per call")
        offset = _offset(page, per_page)
        with self._db.transaction() as conn:
            return self._store.hosts_with_deliveries(conn, profile_uuid, status,
                                                     host_uuids or None, per_page, offset)

    def issuance_rate(self, ca_id: int) -> IssuanceRate:
        """How fast the CA's SCEP deliveries are sent now (pacing.py)."""
        with self._db.transaction() as conn:
            rate = IssuancePacing().rate_of(conn, ca_id)
        if rate is None:
            raise UnknownCertificateAuthority(f"no certificate authority {ca_id}")
        return rate

    def certificates(self, host_uuid: str | None, expiring_within_days: float | None, page: int,
                     per_page: int) -> tuple[list[CertificateRecord], int]:
        """One host's certificates, all; or every host's, one page; by expiry."""
        within_seconds = None
        if expiring_within_days is not None:
            # Written so NaN fails too.
            if not 0 <= expiring_within_days <= MAX_EXPIRING_DAYS:
                raise InvalidRequest(f"expiring_within_days is 0 to {MAX_EXPIRING_DAYS}")
            within_seconds = expiring_within_days * 86400
        if host_uuid is not None:
            with self._db.transaction() as conn:
                rows = self._store.certificates_of_host(conn, host_uuid, within_seconds)
            return rows, len(rows)
        offset = _offset(page, per_page)
        with self._db.transaction() as conn:
            return self._store.certificates(conn, within_seconds, per_page, offset)


def _delivery(r: DeliveryRecord) -> delivery_directory_pb2.Delivery:
    return delivery_directory_pb2.Delivery(
        host_uuid=r.host_uuid, profile_uuid=r.profile_uuid, profile_name=r.profile_name,
        identifier=r.identifier, operation_type=r.operation_type, status=r.status,
        detail=r.detail, updated_at=r.updated_at)


def _certificate(r: CertificateRecord) -> delivery_directory_pb2.HostCertificate:
    return delivery_directory_pb2.HostCertificate(
        host_uuid=r.host_uuid, profile_uuid=r.profile_uuid, serial=r.serial, subject=r.subject,
        issuer=r.issuer, not_before=r.not_before, not_after=r.not_after)


class DeliveryDirectoryServicer(delivery_directory_pb2_grpc.DeliveryDirectoryServicer):
    """proto3 strings are empty when not set: empty means "not given"."""

    def __init__(self, directory: DeliveryDirectory):
        self._directory = directory

    def CountDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        try:
            counts = self._directory.count(request.profile_uuid or None, request.host_uuid or None,
                                           request.paced_ca_name or None)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return delivery_directory_pb2.DeliveryCounts(by_status=counts)

    def ListDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        try:
            rows, total = self._directory.deliveries(
                request.profile_uuid or None, request.host_uuid or None, request.status or None,
                request.page, request.per_page)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return delivery_directory_pb2.ListDeliveriesResponse(
            deliveries=[_delivery(r) for r in rows], total=total)

    def ListHostsWithDeliveries(self, request, context):  # noqa: N802 - gRPC method name
        try:
            hosts, total = self._directory.hosts_with_deliveries(
                request.profile_uuid or None, request.status or None, list(request.host_uuids),
                request.page, request.per_page)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return delivery_directory_pb2.ListHostsWithDeliveriesResponse(host_uuids=hosts,
                                                                      total=total)

    def ListCertificates(self, request, context):  # noqa: N802 - gRPC method name
        within = (request.expiring_within_days if request.HasField("expiring_within_days")
                  else None)
        try:
            rows, total = self._directory.certificates(request.host_uuid or None, within,
                                                       request.page, request.per_page)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return delivery_directory_pb2.ListCertificatesResponse(
            certificates=[_certificate(r) for r in rows], total=total)

    def GetIssuanceRate(self, request, context):  # noqa: N802 - gRPC method name
        try:
            rate = self._directory.issuance_rate(request.ca_id)
        except UnknownCertificateAuthority as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return delivery_directory_pb2.IssuanceRate(
            per_second=rate.per_second, ceiling=rate.ceiling, reason=rate.reason,
            changed_at=rate.changed_at)
