"""Bearer-token authentication of the admin API: the bootstrap ADMIN_API_TOKEN and hashed tokens
made with `admin-config tokens create`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict

from .errors import TooManyRequests, Unauthorized
from .store import ApiTokenStore

BOOTSTRAP_ACTOR = "admin"
TOKEN_PREFIX = "mdmscep_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class FailedAuthLimiter:
    """A bucket of failed token checks per client address (10, one back every 6 s): guessing
    tokens gets 429 before any token is looked at. Bounded in memory (least recent dropped)."""

    def __init__(self, burst: int = 10, refill_seconds: float = 6.0, max_clients: int = 50_000):
        self._burst = burst
        self._refill = refill_seconds
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self._burst), now))
        return min(float(self._burst), tokens + (now - at) / self._refill)

    def check(self, client: str) -> None:
        with self._lock:
            if client in self._buckets and self._level(client, time.monotonic()) < 1:
                raise TooManyRequests("Too many failed authentication attempts; retry later",
                                      int(self._refill) + 1)

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._buckets[client] = (self._level(client, now) - 1, now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)


class Authenticator:
    def __init__(self, db, tokens: ApiTokenStore, bootstrap_token: str | None,
                 limiter: FailedAuthLimiter | None = None):
        self._db = db
        self._tokens = tokens
        self._bootstrap = bootstrap_token.encode("utf-8") if bootstrap_token else None
        self._limiter = limiter or FailedAuthLimiter()

    def actor_for(self, authorization: str | None, client: str = "") -> str:
        """The actor name for an `Authorization` header; Unauthorized, or TooManyRequests for a
        client that failed too often."""
        self._limiter.check(client)
        try:
            return self._actor_for(authorization)
        except Unauthorized:
            self._limiter.failed(client)
            raise

    def _actor_for(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authentication required: send Authorization: Bearer <token>")
        if self._bootstrap is not None and hmac.compare_digest(token.encode("utf-8"),
                                                               self._bootstrap):
            return BOOTSTRAP_ACTOR
        # Lookup by SHA-256: the database compares digests, never the token itself.
        with self._db.transaction() as conn:
            name = self._tokens.find_active(conn, token_hash(token))
        if name is None:
            raise Unauthorized("Invalid or revoked API token")
        return name
