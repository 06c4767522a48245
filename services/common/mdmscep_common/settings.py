"""Configuration from environment variables (README.md "Configuration"), validated once at start-up.

A service that is misconfigured stops at once with a message naming the variable, instead of
failing later on the first request. This module holds the core every process reads and the
readers; each service's settings.py adds only the variables that service uses.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

from .client_address import parse_trusted_proxies
from .crypto import MIN_KEY_CHARS as MIN_SERVER_PRIVATE_KEY_CHARS
from .crypto import UnusableKey, check_server_private_key

# The local broker of a development machine; production sets AMQP_URL.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

T = TypeVar("T")


class SettingsError(Exception):
    """A required variable is missing or a value cannot be used."""


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """What every process reads: its database and broker, internal gRPC over mutual TLS, where
    it listens, the clients it trusts, and the generic HTTP and retention knobs. Each service
    extends it with only the variables it uses (its package's settings.py), so it starts
    without, and never holds, another service's secrets."""

    database_url: str
    amqp_url: str
    http_workers: int = 2
    http_bind_address: str = "0.0.0.0"
    http_threads: int = 8
    prune_interval: float = 600.0
    prune_batch_size: int = 5000
    # Load balancers whose X-Forwarded-For names the client (mdmscep_common.client_address).
    trusted_proxies: tuple = ()
    # Internal gRPC: mutual TLS (mdmscep_common.service_tls) and where servers listen.
    grpc_tls_ca_cert: str | None = None
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_bind_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> CommonSettings:
        """Read and validate the core (migrations, health checks); raises SettingsError."""
        return cls(**common_values(environment(env)))

    def secret_values(self) -> list[str]:
        """Values that must never appear in a log line."""
        return []


def env_int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
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


def env_float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
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


def env_url(env: dict[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name) or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise SettingsError(f"{name} must be a {'/'.join(schemes)} URL, got {raw!r}")
    return raw.rstrip("/") if schemes[0].startswith("http") else raw


def env_optional(env: dict[str, str], name: str) -> str | None:
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


def server_private_keys(env: dict[str, str]) -> tuple[str, str | None]:
    """SERVER_PRIVATE_KEY and SERVER_PRIVATE_KEY_PREVIOUS, for a service that encrypts or
    decrypts secrets at rest (the others never read them)."""
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


def environment(env: dict[str, str] | None) -> dict[str, str]:
    """`env`, or the process environment when None."""
    return dict(os.environ if env is None else env)


def tcp_port(env: dict[str, str], name: str, default: int) -> int:
    port = env_int(env, name, default, minimum=1)
    if port > 65535:
        raise SettingsError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def metrics_port(env: dict[str, str], name: str, default: int) -> int:
    """The metrics listener of a process without HTTP of its own; 0 turns it off."""
    port = env_int(env, name, default, minimum=0)
    if port > 65535:
        raise SettingsError(f"{name} must be a TCP port (1-65535) or 0, got {port}")
    return port


def grpc_addr(env: dict[str, str], addr_name: str, port_name: str, default_port: int) -> str:
    """Where to reach another service's gRPC server: `addr_name` (such as PROCESSOR_GRPC_ADDR),
    else this machine at its port `port_name`."""
    port = tcp_port(env, port_name, default_port)
    host = _grpc_client_host(env.get("GRPC_BIND_ADDRESS") or "127.0.0.1")
    return env.get(addr_name) or f"{host}:{port}"


def common_values(env: dict[str, str]) -> dict:
    """The CommonSettings fields read from `env`, for a service's settings to extend."""
    try:
        trusted_proxies = parse_trusted_proxies(env.get("TRUSTED_PROXIES"))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None
    grpc_bind_address = env.get("GRPC_BIND_ADDRESS") or "127.0.0.1"
    _grpc_client_host(grpc_bind_address)  # validates it
    return dict(
        database_url=env_url(env, "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mdmscep",
                             ("postgresql", "postgres")),
        amqp_url=env_url(env, "AMQP_URL", DEFAULT_AMQP_URL, ("amqp", "amqps")),
        http_workers=env_int(env, "HTTP_WORKERS", 2, minimum=1),
        http_bind_address=env.get("HTTP_BIND_ADDRESS") or "0.0.0.0",
        http_threads=env_int(env, "HTTP_THREADS", 8, minimum=1),
        prune_interval=env_float(env, "PRUNE_INTERVAL", 600.0, minimum=1.0),
        prune_batch_size=env_int(env, "PRUNE_BATCH_SIZE", 5000, minimum=1),
        trusted_proxies=trusted_proxies,
        grpc_tls_ca_cert=env_optional(env, "GRPC_TLS_CA_CERT"),
        grpc_tls_cert=env_optional(env, "GRPC_TLS_CERT"),
        grpc_tls_key=env_optional(env, "GRPC_TLS_KEY"),
        grpc_bind_address=grpc_bind_address,
    )


def load_or_exit(load: Callable[[], T]) -> T:
    """Entry points call this with their settings' loader: a configuration error ends the
    process with exit status 78."""
    try:
        return load()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(78) from None
