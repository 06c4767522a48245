"""profile-processor's configuration: the core, its reconcile loop and gRPC server, the MDM it
commands, and SERVER_PRIVATE_KEY for the CA challenges it decrypts."""

from __future__ import annotations

from dataclasses import dataclass, field

from mdmscep_common.settings import (
    CommonSettings,
    common_values,
    env_float,
    env_int,
    env_url,
    environment,
    grpc_addr,
    metrics_port,
    server_private_keys,
    tcp_port,
)


@dataclass(frozen=True, kw_only=True)
class ProfileProcessorSettings(CommonSettings):
    server_private_key: str = field(repr=False)
    server_private_key_previous: str | None = field(repr=False)
    processor_grpc_port: int
    processor_metrics_port: int
    mdm_grpc_addr: str
    scep_proxy_public_url: str
    profile_reconcile_interval: float
    profile_verify_interval: float
    scep_code_ttl: int
    profile_retry_backoff: float
    profile_renewal_days: float
    certificate_wait: float
    scep_code_retention_days: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ProfileProcessorSettings:
        """Raises SettingsError naming the variable."""
        env = environment(env)
        key, previous_key = server_private_keys(env)
        return cls(
            **common_values(env),
            server_private_key=key,
            server_private_key_previous=previous_key,
            processor_grpc_port=tcp_port(env, "PROCESSOR_GRPC_PORT", 50051),
            processor_metrics_port=metrics_port(env, "PROCESSOR_METRICS_PORT", 9101),
            mdm_grpc_addr=grpc_addr(env, "MDM_GRPC_ADDR", "MDM_GRPC_PORT", 50052),
            scep_proxy_public_url=env_url(env, "SCEP_PROXY_PUBLIC_URL", "http://127.0.0.1:8082",
                                          ("http", "https")),
            profile_reconcile_interval=env_float(env, "PROFILE_RECONCILE_INTERVAL", 30.0,
                                                 minimum=0.1),
            profile_verify_interval=env_float(env, "PROFILE_VERIFY_INTERVAL", 3600.0, minimum=1.0),
            scep_code_ttl=env_int(env, "SCEP_CODE_TTL", 3600, minimum=1),
            profile_retry_backoff=env_float(env, "PROFILE_RETRY_BACKOFF", 10.0, minimum=0.0),
            profile_renewal_days=env_float(env, "PROFILE_RENEWAL_DAYS", 30.0, minimum=0.0),
            certificate_wait=env_float(env, "PROFILE_CERTIFICATE_WAIT", 3600.0, minimum=1.0),
            scep_code_retention_days=env_float(env, "SCEP_CODE_RETENTION_DAYS", 1.0, minimum=0.0),
        )

    def secret_values(self) -> list[str]:
        return [v for v in (self.server_private_key, self.server_private_key_previous) if v]
