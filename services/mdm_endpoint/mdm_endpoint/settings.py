"""mdm-endpoint's configuration: the core, its HTTP, gRPC and push processes, the device
identity it checks, APNs, and (except for the push worker) SERVER_PRIVATE_KEY for the command
payloads it stores encrypted."""

from __future__ import annotations

from dataclasses import dataclass, field

from mdmscep_common.settings import (
    CommonSettings,
    common_values,
    env_float,
    env_int,
    env_optional,
    env_url,
    environment,
    metrics_port,
    server_private_keys,
    tcp_port,
)

# CPU-bound (a CMS signature per request): fewer threads per worker contend less for the GIL
# (make bench compares 2, 4 and 8 threads: 8 serves fewer requests/s with a longer tail on 2
# cores).
DEFAULT_MDM_HTTP_THREADS = 2


@dataclass(frozen=True, kw_only=True)
class MdmEndpointSettings(CommonSettings):
    # None in the push worker, which never encrypts nor decrypts command payloads.
    server_private_key: str | None = field(repr=False)
    server_private_key_previous: str | None = field(repr=False)
    mdm_http_port: int
    mdm_grpc_port: int
    mdm_http_threads: int
    mdm_grpc_metrics_port: int
    mdm_push_metrics_port: int
    mdm_public_url: str
    enroll_secret: str | None = field(repr=False)
    mdm_identity_ca_certs: str | None
    identity_scep_url: str | None
    identity_scep_challenge: str | None = field(repr=False)
    apns_url: str
    apns_cert: str | None
    apns_key: str | None
    apns_ca_certs: str | None
    command_retention_days: float
    credential_check_interval: float
    credential_warning_days: float
    host_facts_interval: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *,
                 needs_server_private_key: bool = True) -> MdmEndpointSettings:
        """Raises SettingsError naming the variable. `needs_server_private_key`: False for the
        push worker: it starts without SERVER_PRIVATE_KEY and never holds it."""
        env = environment(env)
        key, previous_key = server_private_keys(env) if needs_server_private_key else (None, None)
        return cls(
            **common_values(env),
            server_private_key=key,
            server_private_key_previous=previous_key,
            mdm_http_port=tcp_port(env, "MDM_HTTP_PORT", 8081),
            mdm_grpc_port=tcp_port(env, "MDM_GRPC_PORT", 50052),
            mdm_http_threads=env_int(env, "MDM_HTTP_THREADS", DEFAULT_MDM_HTTP_THREADS,
                                     minimum=1),
            mdm_grpc_metrics_port=metrics_port(env, "MDM_GRPC_METRICS_PORT", 9102),
            mdm_push_metrics_port=metrics_port(env, "MDM_PUSH_METRICS_PORT", 9103),
            mdm_public_url=env_url(env, "MDM_PUBLIC_URL", "http://127.0.0.1:8081",
                                   ("http", "https")),
            enroll_secret=env_optional(env, "ENROLL_SECRET"),
            mdm_identity_ca_certs=env_optional(env, "MDM_IDENTITY_CA_CERTS"),
            identity_scep_url=env_url(env, "IDENTITY_SCEP_URL", None, ("http", "https")),
            identity_scep_challenge=env_optional(env, "IDENTITY_SCEP_CHALLENGE"),
            apns_url=env_url(env, "APNS_URL", "https://api.push.apple.com", ("https", "http")),
            apns_cert=env_optional(env, "APNS_CERT"),
            apns_key=env_optional(env, "APNS_KEY"),
            apns_ca_certs=env_optional(env, "APNS_CA_CERTS"),
            command_retention_days=env_float(env, "COMMAND_RETENTION_DAYS", 2.0, minimum=0.0),
            credential_check_interval=env_float(env, "CREDENTIAL_CHECK_INTERVAL", 86400.0,
                                                minimum=1.0),
            credential_warning_days=env_float(env, "CREDENTIAL_WARNING_DAYS", 30.0, minimum=0.0),
            host_facts_interval=env_float(env, "HOST_FACTS_INTERVAL", 86400.0, minimum=60.0),
        )

    def secret_values(self) -> list[str]:
        values = [self.server_private_key, self.server_private_key_previous, self.enroll_secret,
                  self.identity_scep_challenge]
        return [v for v in values if v]
