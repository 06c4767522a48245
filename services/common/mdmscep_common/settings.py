"""Configuration from environment variables (README.md "Configuration"), validated once at start-up.

A service that is misconfigured stops at once with a message naming the variable, instead of
failing later on the first request.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .client_address import parse_trusted_proxies
from .crypto import MIN_KEY_CHARS as MIN_SERVER_PRIVATE_KEY_CHARS
from .crypto import UnusableKey, check_server_private_key

# The local broker of a development machine; production sets AMQP_URL.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


class SettingsError(Exception):
    """A required variable is missing or a value cannot be used."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    amqp_url: str
    # None in the services that never encrypt nor decrypt (load_settings needs_server_private_key).
    server_private_key: str | None = field(repr=False)
    admin_api_token: str | None = field(repr=False)
    admin_http_port: int
    mdm_http_port: int
    scep_proxy_http_port: int
    processor_grpc_port: int
    mdm_grpc_port: int
    scep_proxy_grpc_port: int
    processor_grpc_addr: str
    mdm_grpc_addr: str
    scep_proxy_grpc_addr: str
    mdm_public_url: str
    scep_proxy_public_url: str
    enroll_secret: str | None = field(repr=False)
    mdm_identity_ca_certs: str | None
    identity_scep_url: str | None
    identity_scep_challenge: str | None = field(repr=False)
    apns_url: str
    apns_cert: str | None
    apns_key: str | None
    apns_ca_certs: str | None
    profile_reconcile_interval: float
    profile_verify_interval: float
    scep_code_ttl: int
    profile_retry_backoff: float
    profile_renewal_days: float
    certificate_wait: float
    scep_probe_timeout: float
    scep_upstream_timeout: float
    scep_proxy_ca_concurrency: int
    scep_proxy_queue_timeout: float
    scep_proxy_cache_ttl: float
    http_workers: int
    http_bind_address: str
    http_threads: int
    mdm_http_threads: int
    server_private_key_previous: str | None = field(repr=False)
    processor_metrics_port: int
    mdm_grpc_metrics_port: int
    mdm_push_metrics_port: int
    scep_proxy_grpc_metrics_port: int
    admin_worker_metrics_port: int
    command_retention_days: float
    scep_code_retention_days: float
    activity_retention_days: float
    prune_interval: float
    prune_batch_size: int
    credential_check_interval: float
    credential_warning_days: float
    # scep-proxy's ca_requests rows (per-CA statistics of the last hour) are kept this long.
    ca_request_retention_days: float = 1.0
    trusted_proxies: tuple = ()
    # Internal gRPC: mutual TLS (mdmscep_common.service_tls) and where servers listen.
    grpc_tls_ca_cert: str | None = None
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_bind_address: str = "127.0.0.1"

    def secret_values(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [self.server_private_key, self.admin_api_token, self.enroll_secret,
                  self.identity_scep_challenge]
        values.append(self.server_private_key_previous)
        return [v for v in values if v]


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _url(env: dict[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name) or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise SettingsError(f"{name} must be a {'/'.join(schemes)} URL, got {raw!r}")
    return raw.rstrip("/") if schemes[0].startswith("http") else raw


def _optional(env: dict[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def _grpc_client_host(bind_address: str) -> str:
    """Where a service on this machine reaches a gRPC server bound to `bind_address` (the
    default of *_GRPC_ADDR): the address itself, or loopback when it listens everywhere."""
    try:
        address = ipaddress.ip_address(bind_address)
    except ValueError:
        raise SettingsError(f"GRPC_BIND_ADDRESS must be an IP address (such as 127.0.0.1 or "
                            f"0.0.0.0), got {bind_address!r}") from None
    if address.is_unspecified:
        return "127.0.0.1"
    return f"[{address}]" if address.version == 6 else str(address)


def _server_private_keys(env: dict[str, str], needed: bool) -> tuple[str | None, str | None]:
    """SERVER_PRIVATE_KEY and SERVER_PRIVATE_KEY_PREVIOUS of a service that encrypts or decrypts
    secrets at rest; (None, None) for one that does not (it never reads them)."""
    if not needed:
        return None, None
    key = env.get("SERVER_PRIVATE_KEY", "")
    if not key:
        raise SettingsError(
            "SERVER_PRIVATE_KEY is required: a secret of at least 32 characters "
            "(it keys the encryption of secrets at rest)")
    try:
        check_server_private_key(key)
    except UnusableKey as exc:
        raise SettingsError(f"SERVER_PRIVATE_KEY {exc}") from None
    # The previous key is the one being rotated away from: only its length is checked, so a
    # placeholder that was used can still be rotated out (docs/operations.md).
    previous_key = env.get("SERVER_PRIVATE_KEY_PREVIOUS") or None
    if previous_key is not None and len(previous_key) < MIN_SERVER_PRIVATE_KEY_CHARS:
        raise SettingsError(
            f"SERVER_PRIVATE_KEY_PREVIOUS must be at least {MIN_SERVER_PRIVATE_KEY_CHARS} "
            f"characters, got {len(previous_key)}")
    return key, previous_key


def load_settings(env: dict[str, str] | None = None, *,
                  needs_server_private_key: bool = True) -> Settings:
    """Read and validate the configuration; raises SettingsError naming the variable.
    `needs_server_private_key`: False for a service that never encrypts nor decrypts secrets at
    rest (the SCEP proxy, migrations): it starts without SERVER_PRIVATE_KEY and never holds it."""
    env = dict(os.environ if env is None else env)
    key, previous_key = _server_private_keys(env, needs_server_private_key)
    ports = {
        name: _int(env, name, default, minimum=1)
        for name, default in (
            ("ADMIN_HTTP_PORT", 8080), ("MDM_HTTP_PORT", 8081), ("SCEP_PROXY_HTTP_PORT", 8082),
            ("PROCESSOR_GRPC_PORT", 50051), ("MDM_GRPC_PORT", 50052),
            ("SCEP_PROXY_GRPC_PORT", 50053))
    }
    for name, port in ports.items():
        if port > 65535:
            raise SettingsError(f"{name} must be a TCP port (1-65535), got {port}")
    # Metrics of the processes without HTTP of their own; 0 turns a listener off.
    metrics_ports = {
        name: _int(env, name, default, minimum=0)
        for name, default in (
            ("PROCESSOR_METRICS_PORT", 9101), ("MDM_GRPC_METRICS_PORT", 9102),
            ("MDM_PUSH_METRICS_PORT", 9103), ("SCEP_PROXY_GRPC_METRICS_PORT", 9104),
            ("ADMIN_WORKER_METRICS_PORT", 9105))
    }
    for name, port in metrics_ports.items():
        if port > 65535:
            raise SettingsError(f"{name} must be a TCP port (1-65535) or 0, got {port}")
    try:
        trusted_proxies = parse_trusted_proxies(env.get("TRUSTED_PROXIES"))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None
    grpc_bind_address = env.get("GRPC_BIND_ADDRESS") or "127.0.0.1"
    grpc_host = _grpc_client_host(grpc_bind_address)
    return Settings(
        database_url=_url(env, "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mdmscep",
                          ("postgresql", "postgres")),
        amqp_url=_url(env, "AMQP_URL", DEFAULT_AMQP_URL,
                      ("amqp", "amqps")),
        server_private_key=key,
        admin_api_token=_optional(env, "ADMIN_API_TOKEN"),
        admin_http_port=ports["ADMIN_HTTP_PORT"],
        mdm_http_port=ports["MDM_HTTP_PORT"],
        scep_proxy_http_port=ports["SCEP_PROXY_HTTP_PORT"],
        processor_grpc_port=ports["PROCESSOR_GRPC_PORT"],
        mdm_grpc_port=ports["MDM_GRPC_PORT"],
        scep_proxy_grpc_port=ports["SCEP_PROXY_GRPC_PORT"],
        processor_grpc_addr=env.get("PROCESSOR_GRPC_ADDR")
        or f"{grpc_host}:{ports['PROCESSOR_GRPC_PORT']}",
        mdm_grpc_addr=env.get("MDM_GRPC_ADDR") or f"{grpc_host}:{ports['MDM_GRPC_PORT']}",
        scep_proxy_grpc_addr=env.get("SCEP_PROXY_GRPC_ADDR")
        or f"{grpc_host}:{ports['SCEP_PROXY_GRPC_PORT']}",
        mdm_public_url=_url(env, "MDM_PUBLIC_URL", "http://127.0.0.1:8081", ("http", "https")),
        scep_proxy_public_url=_url(env, "SCEP_PROXY_PUBLIC_URL", "http://127.0.0.1:8082",
                                   ("http", "https")),
        enroll_secret=_optional(env, "ENROLL_SECRET"),
        mdm_identity_ca_certs=_optional(env, "MDM_IDENTITY_CA_CERTS"),
        identity_scep_url=_url(env, "IDENTITY_SCEP_URL", None, ("http", "https")),
        identity_scep_challenge=_optional(env, "IDENTITY_SCEP_CHALLENGE"),
        apns_url=_url(env, "APNS_URL", "https://api.push.apple.com", ("https", "http")),
        apns_cert=_optional(env, "APNS_CERT"),
        apns_key=_optional(env, "APNS_KEY"),
        apns_ca_certs=_optional(env, "APNS_CA_CERTS"),
        profile_reconcile_interval=_float(env, "PROFILE_RECONCILE_INTERVAL", 30.0, minimum=0.1),
        profile_verify_interval=_float(env, "PROFILE_VERIFY_INTERVAL", 3600.0, minimum=1.0),
        scep_code_ttl=_int(env, "SCEP_CODE_TTL", 3600, minimum=1),
        profile_retry_backoff=_float(env, "PROFILE_RETRY_BACKOFF", 10.0, minimum=0.0),
        profile_renewal_days=_float(env, "PROFILE_RENEWAL_DAYS", 30.0, minimum=0.0),
        certificate_wait=_float(env, "PROFILE_CERTIFICATE_WAIT", 3600.0, minimum=1.0),
        scep_probe_timeout=_float(env, "SCEP_PROBE_TIMEOUT", 30.0, minimum=0.1),
        scep_upstream_timeout=_float(env, "SCEP_UPSTREAM_TIMEOUT", 30.0, minimum=0.1),
        scep_proxy_ca_concurrency=_int(env, "SCEP_PROXY_CA_CONCURRENCY", 4, minimum=1),
        scep_proxy_queue_timeout=_float(env, "SCEP_PROXY_QUEUE_TIMEOUT", 5.0, minimum=0.0),
        scep_proxy_cache_ttl=_float(env, "SCEP_PROXY_CACHE_TTL", 60.0, minimum=0.0),
        http_workers=_int(env, "HTTP_WORKERS", 2, minimum=1),
        http_bind_address=env.get("HTTP_BIND_ADDRESS") or "0.0.0.0",
        http_threads=_int(env, "HTTP_THREADS", 8, minimum=1),
        # mdm-endpoint is CPU-bound (a CMS signature per request): fewer threads per worker
        # contend less for the GIL (make bench compares 2, 4 and 8 threads: 8 serves fewer
        # requests/s with a longer tail on 2 cores).
        mdm_http_threads=_int(env, "MDM_HTTP_THREADS", 2, minimum=1),
        server_private_key_previous=previous_key,
        processor_metrics_port=metrics_ports["PROCESSOR_METRICS_PORT"],
        mdm_grpc_metrics_port=metrics_ports["MDM_GRPC_METRICS_PORT"],
        mdm_push_metrics_port=metrics_ports["MDM_PUSH_METRICS_PORT"],
        scep_proxy_grpc_metrics_port=metrics_ports["SCEP_PROXY_GRPC_METRICS_PORT"],
        admin_worker_metrics_port=metrics_ports["ADMIN_WORKER_METRICS_PORT"],
        command_retention_days=_float(env, "COMMAND_RETENTION_DAYS", 2.0, minimum=0.0),
        scep_code_retention_days=_float(env, "SCEP_CODE_RETENTION_DAYS", 1.0, minimum=0.0),
        activity_retention_days=_float(env, "ACTIVITY_RETENTION_DAYS", 365.0, minimum=1.0),
        ca_request_retention_days=_float(env, "CA_REQUEST_RETENTION_DAYS", 1.0, minimum=0.05),
        prune_interval=_float(env, "PRUNE_INTERVAL", 600.0, minimum=1.0),
        prune_batch_size=_int(env, "PRUNE_BATCH_SIZE", 5000, minimum=1),
        credential_check_interval=_float(env, "CREDENTIAL_CHECK_INTERVAL", 86400.0, minimum=1.0),
        credential_warning_days=_float(env, "CREDENTIAL_WARNING_DAYS", 30.0, minimum=0.0),
        # Load balancers whose X-Forwarded-For names the client (mdmscep_common.client_address).
        trusted_proxies=trusted_proxies,
        grpc_tls_ca_cert=_optional(env, "GRPC_TLS_CA_CERT"),
        grpc_tls_cert=_optional(env, "GRPC_TLS_CERT"),
        grpc_tls_key=_optional(env, "GRPC_TLS_KEY"),
        grpc_bind_address=grpc_bind_address,
    )


def load_settings_or_exit(needs_server_private_key: bool = True) -> Settings:
    """Entry points call this: a configuration error ends the process with exit status 78."""
    try:
        return load_settings(needs_server_private_key=needs_server_private_key)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(78) from None
