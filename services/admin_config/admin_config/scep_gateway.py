"""Client of scep-proxy's gRPC ScepGateway: probing a CA's SCEP URL, and the proxy's record of
what it sent a CA (ca_requests and the CA's request slots are scep-proxy's)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from mdmscep.v1 import scep_gateway_pb2, scep_gateway_pb2_grpc
from mdmscep_common.service_tls import SCEP_PROXY, ServiceTls

from .owner_client import OwnerClient


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    reason: str
    ca_certificates_der: list[bytes]


@dataclass(frozen=True)
class CaRequestStats:
    issued: int
    failed: int
    refused_busy: int
    in_flight: int
    average_latency_ms: float | None


class GatewayUnavailable(Exception):
    """scep-proxy could not be asked (down, or no answer in time)."""


class ScepGatewayClient(OwnerClient):
    owner_label = "The SCEP gateway"

    def __init__(self, address: str, tls: ServiceTls, probe_timeout: float):
        # The probe itself is bounded by probe_timeout; the RPC gets a little more.
        self._deadline = probe_timeout + 5
        super().__init__(address, tls, SCEP_PROXY, scep_gateway_pb2_grpc.ScepGatewayStub)

    def probe(self, url: str) -> ProbeOutcome:
        try:
            answer = self._call("ProbeServer", scep_gateway_pb2.ProbeServerRequest(url=url),
                                self._deadline)
        except grpc.RpcError as exc:
            raise GatewayUnavailable(f"scep-proxy did not answer: {exc.code().name}") from None
        return ProbeOutcome(answer.ok, answer.reason, list(answer.ca_certificates))

    def ca_request_stats(self, ca_name: str, window_seconds: int) -> CaRequestStats:
        """What the proxy sent the CA over the last `window_seconds` (1 to 86,400), and the
        requests holding one of its slots now."""
        answer = self._ask("CaRequestStats", scep_gateway_pb2.CaRequestStatsRequest(
            ca_name=ca_name, window_seconds=window_seconds), "stats")
        return CaRequestStats(answer.issued, answer.failed, answer.refused_busy, answer.in_flight,
                              answer.average_latency_ms if answer.HasField("average_latency_ms")
                              else None)
