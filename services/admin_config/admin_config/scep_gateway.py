"""Client of scep-proxy's gRPC ScepGateway (probing a CA's SCEP URL)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from mdmscep.v1 import scep_gateway_pb2, scep_gateway_pb2_grpc
from mdmscep_common.service_tls import SCEP_PROXY, ServiceTls


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    reason: str
    ca_certificates_der: list[bytes]


class GatewayUnavailable(Exception):
    """scep-proxy could not be asked (down, or no answer in time)."""


class ScepGatewayClient:
    def __init__(self, address: str, tls: ServiceTls, probe_timeout: float):
        self._channel = tls.channel(address, SCEP_PROXY)
        self._stub = scep_gateway_pb2_grpc.ScepGatewayStub(self._channel)
        # The probe itself is bounded by probe_timeout; the RPC gets a little more.
        self._deadline = probe_timeout + 5

    def probe(self, url: str) -> ProbeOutcome:
        try:
            answer = self._stub.ProbeServer(scep_gateway_pb2.ProbeServerRequest(url=url),
                                            timeout=self._deadline, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise GatewayUnavailable(f"scep-proxy did not answer: {exc.code().name}") from None
        return ProbeOutcome(answer.ok, answer.reason, list(answer.ca_certificates))

    def close(self) -> None:
        self._channel.close()
