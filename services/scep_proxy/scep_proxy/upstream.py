"""Forwarding to the CA: one pooled httpx client per worker process (ca_connections.py: only
to addresses a CA may have), bounded answers (ca_answers.py: by the bytes received, and by what
they decompress to) and bounded time.

Failures are typed by what the host should be told (README.md "SCEP proxy"): UpstreamTimeout → 504,
any other UpstreamFailure → 502. Status codes are the caller's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from .ca_answers import AnswerTooLarge, UnreadableEncoding, read_answer
from .ca_connections import CONNECT_TIMEOUT_SECONDS, ForbiddenCaAddress, ca_client, split_userinfo
from .scep_protocol import MAX_MESSAGE_BYTES, PKI_MESSAGE_TYPE

MAX_ANSWER_BYTES = MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class CaAnswer:
    status: int
    content_type: str
    body: bytes


class UpstreamFailure(Exception):
    """The CA gave no usable answer. `kind` is a metric label: unreachable (no connection: the
    request never reached the CA), timeout, unreadable, misconfigured, http_status."""

    kind = "unreadable"

    def __init__(self, detail: str, kind: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if kind:
            self.kind = kind


class UpstreamTimeout(UpstreamFailure):
    kind = "timeout"


def upstream_client(read_timeout: float, max_connections: int = 100) -> httpx.Client:
    """Keep-alive pool to the CAs. Redirects are never followed: the admin's URL is the CA."""
    return ca_client(read_timeout, max_connections)


class Upstream:
    def __init__(self, client: httpx.Client, timeout: float):
        self._client = client
        self._timeout = timeout

    def get(self, url: str) -> CaAnswer:
        return self._send("GET", url, None)

    def post_pki_message(self, url: str, message: bytes) -> CaAnswer:
        return self._send("POST", url, message)

    def _send(self, method: str, url: str, body: bytes | None) -> CaAnswer:
        headers = {"Content-Type": PKI_MESSAGE_TYPE} if body is not None else None
        started = time.monotonic()

        def within_time() -> None:
            # httpx's read timeout is per read; this bounds a CA that trickles bytes.
            if time.monotonic() - started > self._timeout:
                raise UpstreamTimeout(self._timeout_detail())

        try:
            target, auth = split_userinfo(url)
            with self._client.stream(method, target, content=body, headers=headers,
                                     auth=auth) as response:
                answer = read_answer(response, MAX_ANSWER_BYTES, within_time)
                return CaAnswer(response.status_code, response.headers.get("content-type", ""),
                                answer)
        except AnswerTooLarge:
            raise UpstreamFailure("the CA's answer is larger than 2 MiB") from None
        except UnreadableEncoding:
            raise UpstreamFailure("the CA's answer has a Content-Encoding that cannot be "
                                  "decoded") from None
        except ForbiddenCaAddress:
            raise UpstreamFailure("the CA's URL leads to a link-local or cloud metadata "
                                  "address", "misconfigured") from None
        except httpx.ConnectTimeout:
            raise UpstreamFailure("the CA did not accept a connection within "
                                  f"{CONNECT_TIMEOUT_SECONDS:g} s", "unreachable") from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(self._timeout_detail()) from None
        except httpx.ConnectError as exc:
            raise UpstreamFailure(f"the CA is unreachable ({_short(exc)})", "unreachable") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UpstreamFailure(f"the CA's URL cannot be used ({_short(exc)})",
                                  "misconfigured") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(f"the CA's answer could not be read ({_short(exc)})") from None

    def _timeout_detail(self) -> str:
        return f"the CA did not answer within {self._timeout:g} s"


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text[:120]
