"""Bearer-token authentication of the admin API: the bootstrap ADMIN_API_TOKEN (always an admin)
and hashed tokens made with `admin-config tokens create` or POST /api_tokens (each with its role,
roles.py)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from mdmscep_common.client_address import client_address
from mdmscep_common.failure_limits import FailureLimit, FailureLimiter

from .errors import Forbidden, TooManyRequests, Unauthorized
from .roles import ADMIN, allows
from .store import ApiTokenStore

log = logging.getLogger(__name__)

BOOTSTRAP_ACTOR = "admin"
TOKEN_PREFIX = "mdmscep_"  # noqa: S105 - a prefix, not a secret
# A random bootstrap token this long is past guessing, as a created one is (43 base64 characters,
# 256 bits): a client over its failure limit still learns whether a token is right.
MIN_BOOTSTRAP_TOKEN_CHARS = 32


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: the actor of the activities they cause (the token's name, `admin` for the
    bootstrap token) and the role of their token."""
    actor: str
    role: str

    def require(self, needed: str) -> None:
        """Forbidden (403, naming the role `needed`) unless this caller's role holds it."""
        if not allows(self.role, needed):
            raise Forbidden(f"This call needs the {needed} role",
                            [{"name": "role", "reason": f"needs {needed}; this token is "
                                                        f"{self.role}"}])


# Failed token checks per client address, shared by every admin-config worker and replica.
ADMIN_AUTH_FAILURES_TABLE = "admin_auth_failures"
ADMIN_AUTH_FAILURE_LIMIT = FailureLimit(burst=10, refill_seconds=6.0)


class Authenticator:
    """Who is calling: the actor and role for a bearer token.

    A valid token is always accepted, from any client, however many failures its address has:
    one client's guesses (or everyone's, behind one load balancer) never lock an admin out. Only
    failing checks are limited: past ADMIN_AUTH_FAILURE_LIMIT a client's failures get 429 with
    Retry-After instead of 401. That 429 still tells a guesser its guess was wrong, which is
    harmless for tokens made by `tokens create` (256 random bits: no rate makes guessing them
    possible); the limit keeps the noise and the database work of a guessing client down. The
    bootstrap ADMIN_API_TOKEN is chosen by the operator, so it must be long and random too
    (a short one is warned about at start).
    """

    def __init__(self, db, tokens: ApiTokenStore, bootstrap_token: str | None,
                 limiter: FailureLimiter | None = None, trusted_proxies: tuple = ()):
        self._db = db
        self._tokens = tokens
        self._bootstrap = bootstrap_token.encode("utf-8") if bootstrap_token else None
        self._limiter = limiter or FailureLimiter(db, ADMIN_AUTH_FAILURES_TABLE,
                                                  ADMIN_AUTH_FAILURE_LIMIT)
        self._trusted_proxies = trusted_proxies
        if bootstrap_token and len(bootstrap_token) < MIN_BOOTSTRAP_TOKEN_CHARS:
            log.warning("ADMIN_API_TOKEN is short: use at least %d random characters (or a token "
                        "from `admin-config tokens create`)", MIN_BOOTSTRAP_TOKEN_CHARS)

    def client(self, remote_addr: str | None, forwarded_for: str | None) -> str:
        """The address failures are counted against (X-Forwarded-For from TRUSTED_PROXIES)."""
        return client_address(remote_addr, forwarded_for, self._trusted_proxies)

    def caller_for(self, authorization: str | None, client: str = "") -> Caller:
        """The caller for an `Authorization` header; Unauthorized, or TooManyRequests for a
        failing check from a client over its limit."""
        try:
            return self._caller_for(authorization)
        except Unauthorized:
            retry_after = self._limiter.failed(client)
            if retry_after:
                raise TooManyRequests("Too many failed authentication attempts; retry later",
                                      retry_after) from None
            raise

    def _caller_for(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authentication required: send Authorization: Bearer <token>")
        if self._bootstrap is not None and hmac.compare_digest(token.encode("utf-8"),
                                                               self._bootstrap):
            return Caller(BOOTSTRAP_ACTOR, ADMIN)
        # Lookup by SHA-256: the database compares digests, never the token itself.
        with self._db.transaction() as conn:
            row = self._tokens.find_active(conn, token_hash(token))
        if row is None:
            raise Unauthorized("Invalid or revoked API token")
        return Caller(row["name"], row["role"])
