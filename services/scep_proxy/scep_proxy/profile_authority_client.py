"""Asking the profile-processor whether a proxy URL may go upstream (gRPC ProfileAuthority).

For PKIOperation the processor uses the one-time code up; GetCACaps/GetCACert only check it, so
their answers may be cached for a few seconds (CachingAuthority). A PKIOperation the proxy then
cannot forward (no free slot at the CA) gives its code back (GiveBackScepCode).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import grpc

from mdmscep.v1 import profile_authority_pb2, profile_authority_pb2_grpc
from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from mdmscep_common.proxy_urls import ProxyId
from mdmscep_common.service_tls import PROFILE_PROCESSOR, ServiceTls

from .cache import TtlCache
from .errors import AuthorityUnavailable, BadGateway, Refused
from .scep_protocol import PKI_OPERATION

log = logging.getLogger(__name__)

AUTHORIZE_TIMEOUT_SECONDS = 5.0
AUTHORIZATION_CACHE_SECONDS = 5.0
MAX_REASON_CHARS = 200
GIVE_BACK_ATTEMPTS = 2

# What a host is answered for each refusal of the processor; a refusal this proxy does not know
# (a newer processor) gets Refused.status (403).
REFUSAL_STATUS = {
    ScepRefusal.SCEP_REFUSAL_UNKNOWN_OPERATION: 400,
    ScepRefusal.SCEP_REFUSAL_UNKNOWN_HOST: 404,
    ScepRefusal.SCEP_REFUSAL_UNKNOWN_PROFILE: 404,
    ScepRefusal.SCEP_REFUSAL_UNKNOWN_CA: 404,
    ScepRefusal.SCEP_REFUSAL_NOT_PENDING: 409,
    ScepRefusal.SCEP_REFUSAL_CODE_UNKNOWN: 403,
    ScepRefusal.SCEP_REFUSAL_CODE_USED: 403,
    ScepRefusal.SCEP_REFUSAL_CODE_EXPIRED: 403,
    ScepRefusal.SCEP_REFUSAL_CODE_SUPERSEDED: 403,
}


@dataclass(frozen=True)
class Authorization:
    ca_name: str
    upstream_url: str
    ca_id: int
    # The CA's fleet-wide limit of PKIOperations in flight; None when the processor did not say
    # (one older than this proxy): the proxy's default applies (limits.py).
    max_concurrent_requests: int | None = None


class Authority(Protocol):
    def authorize(self, scep_id: ProxyId, operation: str) -> Authorization: ...

    def give_back(self, scep_id: ProxyId) -> bool: ...


def _reason_for_host(reason: str, code: str) -> str:
    """The processor's reason, on one short line and without the code, whatever it sent."""
    text = " ".join((reason or "not allowed").replace(code, "(code)").split())
    return text[:MAX_REASON_CHARS]


class ProfileAuthorityClient:
    """AuthorizeScep over gRPC: Refused with the HTTP status of the processor's refusal
    (REFUSAL_STATUS), or AuthorityUnavailable."""

    def __init__(self, address: str, tls: ServiceTls, timeout: float = AUTHORIZE_TIMEOUT_SECONDS):
        self._channel = tls.channel(address, PROFILE_PROCESSOR)
        self._stub = profile_authority_pb2_grpc.ProfileAuthorityStub(self._channel)
        self._timeout = timeout

    def authorize(self, scep_id: ProxyId, operation: str) -> Authorization:
        request = profile_authority_pb2.AuthorizeScepRequest(
            host_uuid=scep_id.host_uuid, profile_uuid=scep_id.profile_uuid,
            ca_name=scep_id.ca_name, one_time_code=scep_id.one_time_code, operation=operation)
        try:
            # wait_for_ready: while the processor restarts (a deploy, a crash) the host's request
            # waits for it, up to the timeout, instead of failing and spending an attempt.
            answer = self._stub.AuthorizeScep(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            log.warning("profile-processor did not answer AuthorizeScep",
                        extra={"ca": scep_id.ca_name, "host_uuid": scep_id.host_uuid,
                               "grpc_code": getattr(code, "name", str(code))})
            raise AuthorityUnavailable("the profile processor is unavailable; retry later",
                                       scep_id.ca_name) from None
        if not answer.allowed:
            raise Refused(_reason_for_host(answer.reason, scep_id.one_time_code),
                          scep_id.ca_name, status=REFUSAL_STATUS.get(answer.refusal, Refused.status))
        parts = urlsplit(answer.upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadGateway("the CA has no usable SCEP URL", scep_id.ca_name, verified_ca=True)
        limit = answer.max_concurrent_requests
        return Authorization(scep_id.ca_name, answer.upstream_url, answer.ca_id,
                             limit if limit > 0 else None)

    def give_back(self, scep_id: ProxyId) -> bool:
        """GiveBackScepCode: the PKIOperation this code was used up for never reached the CA.
        Tried twice; False (logged) when the processor could not be told, so the code stays used
        and the host's attempt ends as if the CA had refused it."""
        request = profile_authority_pb2.GiveBackScepCodeRequest(
            host_uuid=scep_id.host_uuid, profile_uuid=scep_id.profile_uuid,
            ca_name=scep_id.ca_name, one_time_code=scep_id.one_time_code)
        for attempt in range(GIVE_BACK_ATTEMPTS):
            try:
                return self._stub.GiveBackScepCode(request, timeout=self._timeout,
                                                   wait_for_ready=True).given_back
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if attempt + 1 == GIVE_BACK_ATTEMPTS:
                    log.warning("profile-processor did not answer GiveBackScepCode; the code "
                                "stays used", extra={"ca": scep_id.ca_name,
                                                     "host_uuid": scep_id.host_uuid,
                                                     "grpc_code": getattr(code, "name", str(code))})
        return False

    def close(self) -> None:
        self._channel.close()


class CachingAuthority:
    """Remembers allowed GetCACaps/GetCACert answers for a few seconds per (id, operation), so a
    host's burst of cheap requests costs one gRPC call. PKIOperation always goes through."""

    def __init__(self, inner: Authority, ttl: float = AUTHORIZATION_CACHE_SECONDS,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self._inner = inner
        self._cache: TtlCache[tuple[ProxyId, str], Authorization] = TtlCache(
            ttl, max_entries, clock)

    def authorize(self, scep_id: ProxyId, operation: str) -> Authorization:
        if operation == PKI_OPERATION:
            return self._inner.authorize(scep_id, operation)
        key = (scep_id, operation)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        authorization = self._inner.authorize(scep_id, operation)
        self._cache.put(key, authorization)
        return authorization

    def give_back(self, scep_id: ProxyId) -> bool:
        return self._inner.give_back(scep_id)

    def forget(self, ca_name: str | None = None) -> None:
        """Drop cached authorizations (of one CA, or all) after a configuration change."""
        if ca_name is None:
            self._cache.clear()
        else:
            self._cache.drop(lambda key: key[0].ca_name == ca_name)
