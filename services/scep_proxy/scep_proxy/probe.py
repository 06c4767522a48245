"""ProbeServer: is this URL a SCEP server that hands out its CA certificate (GetCACaps, GetCACert)?"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.serialization import Encoding

from .scep_protocol import NoCertificates, operation_url, parse_ca_caps, parse_ca_certificates

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20


@dataclass
class ProbeResult:
    ok: bool
    reason: str = ""
    ca_certificates_der: list[bytes] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.05, self._end - time.monotonic())


def _get(client: httpx.Client, url: str, deadline: _Deadline) -> httpx.Response:
    with client.stream("GET", url, timeout=deadline.remaining()) as response:
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _ProbeFailure("the server's answer is larger than 1 MiB")
        return httpx.Response(response.status_code, headers=response.headers, content=body)


class _ProbeFailure(Exception):
    pass


def probe_scep_server(client: httpx.Client, url: str, timeout: float) -> ProbeResult:
    """Never raises: every failure becomes a ProbeResult with a reason an admin can act on."""
    deadline = _Deadline(timeout)
    host = urlsplit(url).netloc
    try:
        capabilities: list[str] = []
        try:
            caps = _get(client, operation_url(url, "GetCACaps"), deadline)
            if caps.status_code == 200:
                capabilities = parse_ca_caps(caps.content)
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError:
            pass  # GetCACaps is optional for old servers; GetCACert below is decisive.
        answer = _get(client, operation_url(url, "GetCACert", message="mdmscep"), deadline)
        if answer.status_code != 200:
            return ProbeResult(False, f"GetCACert to {host} returned HTTP {answer.status_code}")
        certs = parse_ca_certificates(answer.content, answer.headers.get("content-type", ""))
        return ProbeResult(True, "", [c.public_bytes(Encoding.DER) for c in certs], capabilities)
    except httpx.TimeoutException:
        return ProbeResult(False, f"{host} did not answer GetCACert within {deadline.seconds:g} s")
    except httpx.ConnectError as exc:
        return ProbeResult(False, f"could not connect to {host}: {exc}")
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"GetCACert to {host} failed: {exc.__class__.__name__}: {exc}")
    except NoCertificates as exc:
        return ProbeResult(False, f"{host}: {exc}")
    except _ProbeFailure as exc:
        return ProbeResult(False, f"{host}: {exc}")
