"""scep-proxy's configuration: the core, its HTTP and gRPC processes, the processor it asks,
and its limits towards upstream CAs. It holds no secret: it never encrypts nor decrypts secrets
at rest, so it never reads SERVER_PRIVATE_KEY."""

from __future__ import annotations

from dataclasses import dataclass

from mdmscep_common.settings import (
    CommonSettings,
    common_values,
    env_float,
    env_int,
    environment,
    grpc_addr,
    metrics_port,
    tcp_port,
)


@dataclass(frozen=True, kw_only=True)
class ScepProxySettings(CommonSettings):
    scep_proxy_http_port: int
    scep_proxy_grpc_port: int
    scep_proxy_grpc_metrics_port: int
    processor_grpc_addr: str
    scep_probe_timeout: float
    scep_upstream_timeout: float
    scep_proxy_ca_concurrency: int
    scep_proxy_queue_timeout: float
    scep_proxy_cache_ttl: float
    # ca_requests rows (per-CA statistics of the last hour) are kept this long.
    ca_request_retention_days: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ScepProxySettings:
        """Raises SettingsError naming the variable."""
        env = environment(env)
        return cls(
            **common_values(env),
            scep_proxy_http_port=tcp_port(env, "SCEP_PROXY_HTTP_PORT", 8082),
            scep_proxy_grpc_port=tcp_port(env, "SCEP_PROXY_GRPC_PORT", 50053),
            scep_proxy_grpc_metrics_port=metrics_port(env, "SCEP_PROXY_GRPC_METRICS_PORT", 9104),
            processor_grpc_addr=grpc_addr(env, "PROCESSOR_GRPC_ADDR", "PROCESSOR_GRPC_PORT", 50051),
            scep_probe_timeout=env_float(env, "SCEP_PROBE_TIMEOUT", 30.0, minimum=0.1),
            scep_upstream_timeout=env_float(env, "SCEP_UPSTREAM_TIMEOUT", 30.0, minimum=0.1),
            scep_proxy_ca_concurrency=env_int(env, "SCEP_PROXY_CA_CONCURRENCY", 4, minimum=1),
            scep_proxy_queue_timeout=env_float(env, "SCEP_PROXY_QUEUE_TIMEOUT", 5.0, minimum=0.0),
            scep_proxy_cache_ttl=env_float(env, "SCEP_PROXY_CACHE_TTL", 60.0, minimum=0.0),
            ca_request_retention_days=env_float(env, "CA_REQUEST_RETENTION_DAYS", 1.0,
                                                minimum=0.05),
        )
