"""Client of mdm-endpoint's gRPC HostRegistry: the hosts table is mdm-endpoint's, so admin-config
lists, describes and forgets hosts through it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mdmscep.v1 import host_registry_pb2, host_registry_pb2_grpc
from mdmscep_common.service_tls import MDM_ENDPOINT, ServiceTls

from .owner_client import OWNER_CALL_TIMEOUT_SECONDS, OwnerClient, chunks, time_of


@dataclass(frozen=True)
class RegisteredHost:
    uuid: str
    serial_number: str
    enrolled: bool
    last_seen_at: datetime | None
    device_name: str
    model: str
    os_version: str
    enrolled_at: datetime | None
    push_token_invalid: bool
    product_name: str = ""
    platform: str = ""
    facts_updated_at: datetime | None = None


def _host(message: host_registry_pb2.Host) -> RegisteredHost:
    return RegisteredHost(
        uuid=message.uuid, serial_number=message.serial_number, enrolled=message.enrolled,
        last_seen_at=time_of(message, "last_seen_at"), device_name=message.device_name,
        model=message.model, os_version=message.os_version,
        enrolled_at=time_of(message, "enrolled_at"), push_token_invalid=message.push_token_invalid,
        product_name=message.product_name, platform=message.platform,
        facts_updated_at=time_of(message, "facts_updated_at"))


# The host facts a host list may be narrowed by (HostRegistry.ListHosts), and the platforms.
HOST_FACTS = ("model", "os_version", "product_name", "platform")
PLATFORMS = ("darwin", "ios", "ipados")
MAX_FACT_CHARS = 255


class HostRegistryClient(OwnerClient):
    owner_label = "The MDM endpoint"

    def __init__(self, address: str, tls: ServiceTls, timeout: float = OWNER_CALL_TIMEOUT_SECONDS):
        super().__init__(address, tls, MDM_ENDPOINT, host_registry_pb2_grpc.HostRegistryStub,
                         timeout)

    def delete_host(self, host_uuid: str) -> bool:
        return self._ask("DeleteHost", host_registry_pb2.DeleteHostRequest(host_uuid=host_uuid),
                         "host_uuid").deleted

    def list_hosts(self, page: int, per_page: int, query: str = "",
                   host_uuids: list[str] | None = None,
                   facts: dict[str, str] | None = None) -> tuple[list[RegisteredHost], int]:
        """A page of hosts in enrollment order and how many match over all pages. `query`
        (at most 100 characters), `host_uuids` (at most 1,000) and `facts` (HOST_FACTS, each
        matched exactly) narrow; empty narrows nothing."""
        answer = self._ask("ListHosts", host_registry_pb2.ListHostsRequest(
            query=query, host_uuids=host_uuids or [], page=page, per_page=per_page,
            **(facts or {})), "hosts")
        return [_host(h) for h in answer.hosts], answer.total

    def get_hosts(self, host_uuids: list[str]) -> dict[str, RegisteredHost]:
        """The named hosts mdm-endpoint knows, by UUID (unknown ones are left out)."""
        found: dict[str, RegisteredHost] = {}
        for chunk in chunks(list(dict.fromkeys(host_uuids))):
            answer = self._ask("GetHosts", host_registry_pb2.GetHostsRequest(host_uuids=chunk),
                               "host_uuid")
            found.update((h.uuid, _host(h)) for h in answer.hosts)
        return found
