"""admin-config's configuration: the core, its API and worker, the owners it asks over gRPC,
and (except for the worker) SERVER_PRIVATE_KEY for the CA challenges it stores encrypted."""

from __future__ import annotations

from dataclasses import dataclass, field

from mdmscep_common.settings import (
    CommonSettings,
    common_values,
    env_float,
    env_optional,
    environment,
    grpc_addr,
    metrics_port,
    server_private_keys,
    tcp_port,
)


@dataclass(frozen=True, kw_only=True)
class AdminConfigSettings(CommonSettings):
    # None in the worker, which never encrypts nor decrypts secrets at rest.
    server_private_key: str | None = field(repr=False)
    server_private_key_previous: str | None = field(repr=False)
    admin_api_token: str | None = field(repr=False)
    admin_http_port: int
    admin_worker_metrics_port: int
    processor_grpc_addr: str
    mdm_grpc_addr: str
    scep_proxy_grpc_addr: str
    scep_probe_timeout: float
    activity_retention_days: float
    credential_check_interval: float
    credential_warning_days: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *,
                 needs_server_private_key: bool = True) -> AdminConfigSettings:
        """Raises SettingsError naming the variable. `needs_server_private_key`: False for the
        worker: it starts without SERVER_PRIVATE_KEY and never holds it."""
        env = environment(env)
        key, previous_key = server_private_keys(env) if needs_server_private_key else (None, None)
        return cls(
            **common_values(env),
            server_private_key=key,
            server_private_key_previous=previous_key,
            admin_api_token=env_optional(env, "ADMIN_API_TOKEN"),
            admin_http_port=tcp_port(env, "ADMIN_HTTP_PORT", 8080),
            admin_worker_metrics_port=metrics_port(env, "ADMIN_WORKER_METRICS_PORT", 9105),
            processor_grpc_addr=grpc_addr(env, "PROCESSOR_GRPC_ADDR", "PROCESSOR_GRPC_PORT", 50051),
            mdm_grpc_addr=grpc_addr(env, "MDM_GRPC_ADDR", "MDM_GRPC_PORT", 50052),
            scep_proxy_grpc_addr=grpc_addr(env, "SCEP_PROXY_GRPC_ADDR", "SCEP_PROXY_GRPC_PORT", 50053),
            scep_probe_timeout=env_float(env, "SCEP_PROBE_TIMEOUT", 30.0, minimum=0.1),
            activity_retention_days=env_float(env, "ACTIVITY_RETENTION_DAYS", 365.0, minimum=1.0),
            credential_check_interval=env_float(env, "CREDENTIAL_CHECK_INTERVAL", 86400.0,
                                                minimum=1.0),
            credential_warning_days=env_float(env, "CREDENTIAL_WARNING_DAYS", 30.0, minimum=0.0),
        )

    def secret_values(self) -> list[str]:
        values = [self.server_private_key, self.server_private_key_previous, self.admin_api_token]
        return [v for v in values if v]
