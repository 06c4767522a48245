"""Typed refusals of the SCEP proxy: each carries its HTTP status and a short reason for the host.

Every reason names the CA when it is known (README.md "SCEP proxy"), and never the one-time
code.
"""

from __future__ import annotations

RETRY_AFTER_SECONDS = 5


class ProxyError(Exception):
    status = 400

    def __init__(self, reason: str, ca_name: str | None = None, *, status: int | None = None,
                 retry_after: int | None = None, verified_ca: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.ca_name = ca_name
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        # True once the processor confirmed the CA exists: only then may it be a metric label.
        self.verified_ca = verified_ca

    def text(self) -> str:
        prefix = f"SCEP proxy, CA {self.ca_name}" if self.ca_name else "SCEP proxy"
        return f"{prefix}: {self.reason}\n"


class BadRequest(ProxyError):
    status = 400


class NotAllowed(ProxyError):
    status = 405


class PayloadTooLarge(ProxyError):
    status = 413


class Refused(ProxyError):
    """The processor refused: unknown host/profile/CA, delivery not pending, code not usable."""

    status = 403


class Busy(ProxyError):
    """The per-CA limit is reached: the code is untouched and the host may retry."""

    status = 503

    def __init__(self, reason: str, ca_name: str | None = None):
        super().__init__(reason, ca_name, retry_after=RETRY_AFTER_SECONDS)


class TooManyRequests(ProxyError):
    """This client address had too many requests refused lately (client_limits.py); nothing was
    asked."""

    status = 429


class AuthorityUnavailable(ProxyError):
    """The profile-processor did not answer AuthorizeScep."""

    status = 503

    def __init__(self, reason: str, ca_name: str | None = None):
        super().__init__(reason, ca_name, retry_after=RETRY_AFTER_SECONDS)


class BadGateway(ProxyError):
    """The CA is unreachable, answered 5xx, or its answer could not be read."""

    status = 502

    def __init__(self, reason: str, ca_name: str | None = None, *, unreachable: bool = False,
                 **kwargs):
        super().__init__(reason, ca_name, **kwargs)
        # No HTTP answer at all (connection refused or timed out): the CA is down, not refusing.
        self.unreachable = unreachable


class GatewayTimeout(BadGateway):
    status = 504
