"""The services admin-config asks about what it shows but does not own, in-process: mdm-endpoint's
HostRegistry, the profile-processor's DeliveryDirectory and scep-proxy's ScepGateway.CaRequestStats.
Each is admin-config's real client (host_registry_client.py, delivery_directory_client.py,
scep_gateway.py) over the owner's real servicer, called directly instead of over a channel: the
request and the answer go through their protobuf bytes, the owner's checks, logic and SQL run as
in production, over the test's own database connection (so rows a test inserts in its rolled-back
transaction are seen). A request the owner refuses (INVALID_ARGUMENT) fails the test: admin-config
must not make it.

What this leaves out (the mutual-TLS channel, deadlines, an owner that is down) is tested with
real servers: tests/admin_config/test_admin_owner_clients.py."""

from __future__ import annotations

from typing import Any

import grpc

from admin_config.delivery_directory_client import DeliveryDirectoryClient
from admin_config.host_registry_client import HostRegistryClient
from admin_config.owner_client import OwnerClient
from admin_config.scep_gateway import ScepGatewayClient
from mdm_endpoint.host_registry import HostRegistry, HostRegistryServicer
from profile_processor.delivery_directory import DeliveryDirectory, DeliveryDirectoryServicer
from scep_proxy.ca_request_stats import CaRequestStatistics
from scep_proxy.gateway import ScepGatewayServicer
from tests.support.recording_publisher import RecordingPublisher


class InvalidArgument(AssertionError):
    """What the real owner answers INVALID_ARGUMENT to: admin-config must not ask it."""


class _Aborted(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class _Context:
    """The part of a servicer context the owners use: abort."""

    def abort(self, code: grpc.StatusCode, details: str):
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidArgument(details)
        raise _Aborted(code, details)


class _InProcessStub:
    """A gRPC stub whose calls go straight to `servicer` (request and answer as bytes)."""

    def __init__(self, servicer: Any):
        self._servicer = servicer

    def __getattr__(self, method: str):
        handler = getattr(self._servicer, method)

        def call(request, timeout=None, **_):
            request = type(request).FromString(request.SerializeToString())
            answer = handler(request, _Context())
            return type(answer).FromString(answer.SerializeToString())

        return call


def _in_process(client_class: type, servicer: Any, **attributes: Any) -> OwnerClient:
    client = client_class.__new__(client_class)  # no channel to open
    client._stub = _InProcessStub(servicer)
    client._timeout = 1.0
    client._channel = None
    for name, value in attributes.items():
        setattr(client, name, value)
    client.close = lambda: None
    return client


def host_registry(db, events=None) -> HostRegistryClient:
    """mdm-endpoint's HostRegistry over `db` (a deleted host's host.deleted goes to `events`)."""
    return _in_process(HostRegistryClient, HostRegistryServicer(
        HostRegistry(db, events if events is not None else RecordingPublisher())))


def delivery_directory(db) -> DeliveryDirectoryClient:
    return _in_process(DeliveryDirectoryClient, DeliveryDirectoryServicer(DeliveryDirectory(db)))


def ca_requests(db) -> ScepGatewayClient:
    """ScepGateway.CaRequestStats over `db` (this gateway probes nothing)."""
    return _in_process(ScepGatewayClient, ScepGatewayServicer(
        None, probe_timeout=1.0, stats=CaRequestStatistics(db)), _deadline=1.0)


def row_owners(db) -> dict[str, Any]:
    """build_services' owner arguments, all answering from `db`'s rows."""
    return {"host_registry": host_registry(db), "deliveries": delivery_directory(db),
            "ca_requests": ca_requests(db)}
