"""gRPC ScepGateway: admin-config's questions about upstream SCEP servers."""

from __future__ import annotations

import httpx

from mdmscep.v1 import scep_gateway_pb2, scep_gateway_pb2_grpc

from .probe import probe_scep_server


class ScepGatewayServicer(scep_gateway_pb2_grpc.ScepGatewayServicer):
    def __init__(self, client: httpx.Client, probe_timeout: float):
        self._client = client
        self._probe_timeout = probe_timeout

    def ProbeServer(self, request, context):  # noqa: N802 - gRPC method name
        result = probe_scep_server(self._client, request.url, self._probe_timeout)
        return scep_gateway_pb2.ProbeServerResponse(
            ok=result.ok, reason=result.reason,
            ca_certificates=result.ca_certificates_der, capabilities=result.capabilities)
