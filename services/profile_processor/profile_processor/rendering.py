"""render_for_host: a profile's per-host copy, with its CA's challenge, a new one-time code in the
proxy URL, and the renewal id, substituted textually and XML-escaped (README.md "Admin API")."""

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


def render_for_host(template: fleet_vars.ProfileTemplate, host_uuid: str, profile_uuid: str,
                    cas: list[CertificateAuthorityForProfile], proxy_public_url: str) -> Rendered:
    values = {fleet_vars.SCEP_RENEWAL_ID: fleet_vars.renewal_id(profile_uuid)}
    codes = []
    for ca in cas:
        code = new_one_time_code()
        codes.append((ca.name, code))
        values[fleet_vars.CUSTOM_SCEP_CHALLENGE + ca.name] = ca.challenge
        values[fleet_vars.CUSTOM_SCEP_PROXY_URL + ca.name] = proxy_url(
            proxy_public_url, ProxyId(host_uuid, profile_uuid, ca.name, code))
    return Rendered(template.render(values), codes)
