"""The HTTP client scep-proxy talks to CAs with (forwarding and ProbeServer alike).

Every connection it opens is checked where it is made: the CA's host name is resolved once, each
address it resolved to is checked (mdmscep_common.ca_addresses: no link-local, no cloud metadata
service), and the connection goes to one of those same addresses, so a name cannot pass the check
and then resolve elsewhere (DNS rebinding). TLS still verifies the certificate for the host name
of the URL. Redirects are never followed (the admin's URL is the CA) and environment proxies are
not used (the checked address must be the one connected to). The check happens in httpcore's
network backend, which httpx has no public option for: guarded_transport sets up the transport's
pool itself (httpx and httpcore are pinned in requirements/runtime.txt).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpcore
import httpx

from mdmscep_common.ca_addresses import FORBIDDEN_REASON, forbidden_address, forbidden_host

USER_AGENT = "mdmscep-scep-proxy"
CONNECT_TIMEOUT_SECONDS = 5.0

Resolver = Callable[..., list]


class ForbiddenCaAddress(httpx.TransportError):
    """The CA's host is, or resolved to, an address no CA may have. Nothing was sent."""

    def __init__(self, message: str = FORBIDDEN_REASON):
        super().__init__(message)


class CheckedAddressBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses that pass the check."""

    def __init__(self, resolve: Resolver = socket.getaddrinfo):
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        if forbidden_host(host):
            raise ForbiddenCaAddress()
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"name not resolved: {exc}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses:
            raise httpcore.ConnectError("name not resolved")
        # One forbidden address is enough to refuse: such a name is not a CA's.
        if any(forbidden_address(address) for address in addresses):
            raise ForbiddenCaAddress()
        failure: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure  # type: ignore[misc] - addresses is not empty


def split_userinfo(url: str) -> tuple[httpx.URL, httpx.BasicAuth | None]:
    """The URL without `user:password@`, and those as the Basic credentials httpx would send for
    them anyway: the URL httpx logs, and any error that quotes it, then carries no password."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return parsed, None
    return parsed.copy_with(userinfo=b""), httpx.BasicAuth(parsed.username, parsed.password)


def guarded_transport(limits: httpx.Limits, resolve: Resolver = socket.getaddrinfo
                      ) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(limits=limits)
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001 - see the module's docstring
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=CheckedAddressBackend(resolve))
    return transport


def ca_client(read_timeout: float, max_connections: int = 100,
              resolve: Resolver = socket.getaddrinfo) -> httpx.Client:
    """A keep-alive pool to the CAs. Answers are asked for uncompressed (ca_answers.py reads
    them bounded by the bytes received either way)."""
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections, keepalive_expiry=30)
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_SECONDS),
        transport=guarded_transport(limits, resolve), follow_redirects=False, trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
