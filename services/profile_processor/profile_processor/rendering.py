"""render_for_host: a profile's per-host copy, with its CA's challenge, a new one-time code in the
proxy URL, the renewal id and the host's own values, substituted textually and XML-escaped
(README.md "Admin API")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from mdmscep_common import fleet_vars
from mdmscep_common.proxy_urls import ProxyId, proxy_url

CODE_BYTES = 24


def new_one_time_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


@dataclass(frozen=True)
class CertificateAuthorityForProfile:
    name: str
    challenge: str


@dataclass(frozen=True)
class Rendered:
    payload: bytes
    codes: list[tuple[str, str]]  # (CA name, one-time code)


@dataclass(frozen=True)
class HostValues:
    """What the host variables read: its serial number and Fleet's name of its platform ("" when
    the host has not said yet)."""

    serial_number: str = ""
    platform: str = ""


def render_for_host(template: fleet_vars.ProfileTemplate, host_uuid: str, profile_uuid: str,
                    cas: list[CertificateAuthorityForProfile], proxy_public_url: str,
                    host: HostValues = HostValues()) -> Rendered:
    renewal_id = fleet_vars.renewal_id(profile_uuid)
    values = {fleet_vars.SCEP_RENEWAL_ID: renewal_id, fleet_vars.CERTIFICATE_RENEWAL_ID: renewal_id,
              fleet_vars.HOST_UUID: host_uuid, fleet_vars.HOST_HARDWARE_SERIAL: host.serial_number,
              fleet_vars.HOST_PLATFORM: fleet_vars.PLATFORM_NAMES.get(host.platform, "")}
    codes = []
    for ca in cas:
        code = new_one_time_code()
        codes.append((ca.name, code))
        values[fleet_vars.CUSTOM_SCEP_CHALLENGE + ca.name] = ca.challenge
        values[fleet_vars.CUSTOM_SCEP_PROXY_URL + ca.name] = proxy_url(
            proxy_public_url, ProxyId(host_uuid, profile_uuid, ca.name, code))
    return Rendered(template.render(values), codes)
