"""gRPC ScepGateway: admin-config's questions about upstream SCEP servers and what the proxy
sent them."""

from __future__ import annotations

import grpc
import httpx

from mdmscep.v1 import scep_gateway_pb2, scep_gateway_pb2_grpc

from .ca_request_stats import CaRequestStatistics, InvalidRequest
from .probe import probe_scep_server


class ScepGatewayServicer(scep_gateway_pb2_grpc.ScepGatewayServicer):
    def __init__(self, client: httpx.Client, probe_timeout: float,
                 stats: CaRequestStatistics | None = None):
        self._client = client
        self._probe_timeout = probe_timeout
        # None: this server answers probes only (CaRequestStats is UNIMPLEMENTED).
        self._stats = stats

    def ProbeServer(self, request, context):  # noqa: N802 - gRPC method name
        result = probe_scep_server(self._client, request.url, self._probe_timeout)
        return scep_gateway_pb2.ProbeServerResponse(
            ok=result.ok, reason=result.reason,
            ca_certificates=result.ca_certificates_der, capabilities=result.capabilities)

    def CaRequestStats(self, request, context):  # noqa: N802 - gRPC method name
        if self._stats is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server keeps no CA statistics")
        try:
            stats = self._stats.of_ca(request.ca_name, request.window_seconds)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return scep_gateway_pb2.CaRequestStatsResponse(
            issued=stats.issued, failed=stats.failed, refused_busy=stats.refused_busy,
            in_flight=stats.in_flight, average_latency_ms=stats.average_latency_ms)
