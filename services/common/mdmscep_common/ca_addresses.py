"""Addresses a CA's SCEP URL may never lead to: link-local and cloud metadata services.

An admin's CA URL makes scep-proxy send requests from inside the deployment. Link-local
addresses (169.254.0.0/16, fe80::/10) and the cloud providers' metadata services hand out
instance credentials to whoever asks from there, so they are refused when a CA is saved
(admin_config/certificate_authorities.py: an address or name written in the URL) and again on
every connection scep-proxy opens (scep_proxy/ca_connections.py: the address a name resolved to,
so a name that later resolves to one of them is refused too). Loopback and private addresses
stay allowed: CAs usually live on the internal network, and tests run them on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services outside the link-local ranges (169.254.169.254 is link-local anyway).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, Azure, GCP, OpenStack, Oracle, DigitalOcean
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure platform (WireServer)
))
METADATA_NAMES = frozenset((
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal",
))
# NAT64 (RFC 6052) embeds an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

FORBIDDEN_REASON = "a link-local or cloud metadata address cannot be a certificate authority"


def _embedded_ipv4(address: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def forbidden_address(text: str) -> bool:
    """True for an IP address (text, IPv6 scope allowed) no CA may have."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    for candidate in {address, _embedded_ipv4(address)}:
        plain = ipaddress.ip_address(str(candidate).split("%", 1)[0])
        if plain.is_link_local or plain in METADATA_ADDRESSES:
            return True
        if plain.is_unspecified or plain.is_multicast:
            return True
    return False


def forbidden_host(hostname: str) -> bool:
    """True for a URL's host (name or address literal, without brackets) no CA may have."""
    host = unquote(hostname).strip().rstrip(".").lower()  # an IPv6 zone may come as %25
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host in METADATA_NAMES or forbidden_address(host)
