"""ProbeServer: is this URL a SCEP server that hands out its CA certificate (GetCACaps, GetCACert)?

The reasons go back to the admin who typed the URL, so they help with a wrong URL without
turning the probe into a port scanner of the proxy's network: every way of not getting an answer
(connection refused or reset, a name that does not resolve, a failed TLS handshake, a timeout)
gets one and the same reason, and no reason or log line repeats the URL's userinfo
(user:password@). A URL whose host is, or resolves to, a link-local or cloud metadata address is
refused without a request (ca_connections.py checks every connection the client opens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.serialization import Encoding

from mdmscep_common.ca_addresses import FORBIDDEN_REASON, forbidden_host

from .ca_answers import AnswerTooLarge, UnreadableEncoding, read_answer
from .ca_connections import ForbiddenCaAddress, split_userinfo
from .scep_protocol import NoCertificates, operation_url, parse_ca_caps, parse_ca_certificates

MAX_ANSWER_BYTES = 1 << 20
# Asked of every CA, whatever client the probe is given: answers are read raw either way.
REQUEST_HEADERS = {"Accept-Encoding": "identity"}


@dataclass
class ProbeResult:
    ok: bool
    reason: str = ""
    ca_certificates_der: list[bytes] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.05, self._end - time.monotonic())

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise httpx.ReadTimeout("the probe's time is up")


def _get(client: httpx.Client, url: str, deadline: _Deadline) -> _Answer:
    target, auth = split_userinfo(url)
    with client.stream("GET", target, timeout=deadline.remaining(), headers=REQUEST_HEADERS,
                       auth=auth) as response:
        body = read_answer(response, MAX_ANSWER_BYTES, deadline.check)
        return _Answer(response.status_code, response.headers.get("content-type", ""), body)


def server_name(url: str) -> str:
    """host[:port] of a URL: never its userinfo, path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the server"
    if not host:
        return "the server"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def no_answer_reason(server: str, timeout: float) -> str:
    """The one reason for every way of getting no answer at all."""
    return f"could not connect to {server}, or it did not answer within {timeout:g} s"


def probe_scep_server(client: httpx.Client, url: str, timeout: float) -> ProbeResult:
    """Never raises: every failure becomes a ProbeResult with a reason an admin can act on."""
    deadline = _Deadline(timeout)
    server = server_name(url)
    try:
        if forbidden_host(urlsplit(url).hostname or ""):
            return ProbeResult(False, f"{server}: {FORBIDDEN_REASON}")
    except ValueError:
        return ProbeResult(False, no_answer_reason(server, timeout))
    try:
        capabilities: list[str] = []
        try:
            caps = _get(client, operation_url(url, "GetCACaps"), deadline)
            if caps.status == 200:
                capabilities = parse_ca_caps(caps.body)
        except (httpx.TimeoutException, ForbiddenCaAddress):
            raise
        except (httpx.HTTPError, AnswerTooLarge, UnreadableEncoding):
            pass  # GetCACaps is optional for old servers; GetCACert below is decisive.
        answer = _get(client, operation_url(url, "GetCACert", message="mdmscep"), deadline)
        if answer.status != 200:
            return ProbeResult(False, f"GetCACert to {server} returned HTTP {answer.status}")
        certs = parse_ca_certificates(answer.body, answer.content_type)
        return ProbeResult(True, "", [c.public_bytes(Encoding.DER) for c in certs], capabilities)
    except ForbiddenCaAddress:
        return ProbeResult(False, f"{server}: {FORBIDDEN_REASON}")
    except NoCertificates as exc:
        return ProbeResult(False, f"{server}: {exc}")
    except AnswerTooLarge:
        return ProbeResult(False, f"{server}: the server's answer is larger than 1 MiB")
    except UnreadableEncoding:
        return ProbeResult(False, f"{server}: the server's answer has a Content-Encoding that "
                                  "cannot be decoded")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        # Refused, reset, unresolved, TLS, timeout, a URL httpx cannot use: one reason for all.
        return ProbeResult(False, no_answer_reason(server, timeout))
