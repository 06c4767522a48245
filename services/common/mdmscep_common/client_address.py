"""The address of the client behind the load balancers an operator trusts.

Behind nginx or an ingress every request arrives from the same address, so limits keyed on the
peer address alone would put every client in one bucket. `X-Forwarded-For` is honoured only when
the peer is one of TRUSTED_PROXIES (addresses or CIDR networks): walking the header from the
right, each hop added by a trusted proxy is skipped, and the first address a trusted proxy did
not add is the client. An untrusted peer's header is ignored (anyone can write one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds the work on a header an attacker may make long through a trusted proxy.
MAX_FORWARDED_HOPS = 32


def parse_trusted_proxies(raw: str | None) -> tuple[Network, ...]:
    """`10.0.0.0/8, 127.0.0.1` → networks; ValueError naming the entry that is not one."""
    networks = []
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR network: {entry!r}") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address, networks: Iterable[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(remote_addr: str | None, forwarded_for: str | None,
                   trusted_proxies: tuple[Network, ...]) -> str:
    """The client's address as a string ("" when the peer is unknown)."""
    peer = _address(remote_addr or "")
    if peer is None:
        return (remote_addr or "")[:64]
    if not trusted_proxies or not forwarded_for or not _trusted(peer, trusted_proxies):
        return str(peer)
    hops = [hop for hop in forwarded_for.split(",")[-MAX_FORWARDED_HOPS:]]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from the left of the header: stop at the last trusted hop
        client = address
        if not _trusted(address, trusted_proxies):
            break
    return str(client)
