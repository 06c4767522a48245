"""Client of the profile-processor's gRPC DeliveryDirectory: deliveries (host_profiles) and the
certificates hosts hold (host_certificates) are the processor's, so admin-config counts, lists
and shows them through it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mdmscep.v1 import delivery_directory_pb2, delivery_directory_pb2_grpc
from mdmscep_common.service_tls import PROFILE_PROCESSOR, ServiceTls

from .owner_client import OWNER_CALL_TIMEOUT_SECONDS, OwnerClient, time_of


@dataclass(frozen=True)
class Delivery:
    host_uuid: str
    profile_uuid: str
    # The profile's name and PayloadIdentifier when the delivery was made.
    profile_name: str
    identifier: str
    operation_type: str
    status: str
    detail: str
    updated_at: datetime | None


@dataclass(frozen=True)
class HostCertificate:
    host_uuid: str
    profile_uuid: str
    serial: str
    subject: str
    issuer: str
    not_before: datetime | None
    not_after: datetime | None


@dataclass(frozen=True)
class IssuanceRate:
    """How fast the processor sends a CA's SCEP deliveries (learned from the CA's answers)."""
    per_second: float
    ceiling: float | None  # the admin's max_issuance_per_second
    reason: str
    changed_at: datetime | None

    def as_json(self) -> dict:
        return {"per_second": round(self.per_second, 3), "ceiling": self.ceiling,
                "reason": self.reason,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None}


def _delivery(message: delivery_directory_pb2.Delivery) -> Delivery:
    return Delivery(message.host_uuid, message.profile_uuid, message.profile_name,
                    message.identifier, message.operation_type, message.status, message.detail,
                    time_of(message, "updated_at"))


def _certificate(message: delivery_directory_pb2.HostCertificate) -> HostCertificate:
    return HostCertificate(message.host_uuid, message.profile_uuid, message.serial,
                           message.subject, message.issuer, time_of(message, "not_before"),
                           time_of(message, "not_after"))


class DeliveryDirectoryClient(OwnerClient):
    owner_label = "The profile processor"

    def __init__(self, address: str, tls: ServiceTls, timeout: float = OWNER_CALL_TIMEOUT_SECONDS):
        super().__init__(address, tls, PROFILE_PROCESSOR,
                         delivery_directory_pb2_grpc.DeliveryDirectoryStub, timeout)

    def count_deliveries(self, profile_uuid: str = "", host_uuid: str = "",
                         paced_ca_name: str = "") -> dict[str, int]:
        """Status → deliveries (statuses with none left out). Exactly one of the three: a
        profile's installs, a host's deliveries (removals too), or a CA's paced installs."""
        answer = self._ask("CountDeliveries", delivery_directory_pb2.CountDeliveriesRequest(
            profile_uuid=profile_uuid, host_uuid=host_uuid, paced_ca_name=paced_ca_name),
            "deliveries")
        return dict(answer.by_status)

    def issuance_rate(self, ca_id: int) -> IssuanceRate | None:
        """The CA's issuance rate now; None while the processor does not know the CA."""
        answer = self._ask("GetIssuanceRate",
                           delivery_directory_pb2.GetIssuanceRateRequest(ca_id=ca_id),
                           "issuance_rate", none_if_not_found=True)
        if answer is None:
            return None
        return IssuanceRate(answer.per_second,
                            answer.ceiling if answer.HasField("ceiling") else None, answer.reason,
                            time_of(answer, "changed_at"))

    def deliveries_of_profile(self, profile_uuid: str, status: str, page: int,
                              per_page: int) -> tuple[list[Delivery], int]:
        """A page of the profile's deliveries by host UUID (`status`: only those; empty: any)."""
        answer = self._ask("ListDeliveries", delivery_directory_pb2.ListDeliveriesRequest(
            profile_uuid=profile_uuid, status=status, page=page, per_page=per_page), "deliveries")
        return [_delivery(d) for d in answer.deliveries], answer.total

    def deliveries_of_host(self, host_uuid: str, status: str = "") -> list[Delivery]:
        """Every delivery of the host, oldest first."""
        answer = self._ask("ListDeliveries", delivery_directory_pb2.ListDeliveriesRequest(
            host_uuid=host_uuid, status=status), "deliveries")
        return [_delivery(d) for d in answer.deliveries]

    def hosts_with_deliveries(self, profile_uuid: str, status: str, page: int, per_page: int,
                              host_uuids: list[str] | None = None) -> tuple[list[str], int]:
        """A page of the UUIDs of hosts with a delivery of the profile and/or in the status (at
        least one of the two), in host UUID order; `host_uuids` (at most 1,000): only among those."""
        answer = self._ask("ListHostsWithDeliveries",
                           delivery_directory_pb2.ListHostsWithDeliveriesRequest(
                               profile_uuid=profile_uuid, status=status,
                               host_uuids=host_uuids or [], page=page, per_page=per_page),
                           "hosts")
        return list(answer.host_uuids), answer.total

    def certificates_of_host(self, host_uuid: str) -> list[HostCertificate]:
        """Every certificate the host holds, soonest expiry first."""
        answer = self._ask("ListCertificates", delivery_directory_pb2.ListCertificatesRequest(
            host_uuid=host_uuid), "certificates")
        return [_certificate(c) for c in answer.certificates]

    def certificates(self, expiring_within_days: float | None, page: int,
                     per_page: int) -> tuple[list[HostCertificate], int]:
        """A page of every host's certificates, soonest expiry first; `expiring_within_days`
        (0 to 36,500): only those expiring within it (expired ones too)."""
        request = delivery_directory_pb2.ListCertificatesRequest(page=page, per_page=per_page)
        if expiring_within_days is not None:
            request.expiring_within_days = expiring_within_days
        answer = self._ask("ListCertificates", request, "certificates")
        return [_certificate(c) for c in answer.certificates], answer.total
