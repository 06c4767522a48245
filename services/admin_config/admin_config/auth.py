"""Bearer-token authentication of the admin API: the bootstrap ADMIN_API_TOKEN and hashed tokens
made with `admin-config tokens create`."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .errors import Unauthorized
from .store import ApiTokenStore

BOOTSTRAP_ACTOR = "admin"
TOKEN_PREFIX = "mdmscep_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    def __init__(self, db, tokens: ApiTokenStore, bootstrap_token: str | None):
        self._db = db
        self._tokens = tokens
        self._bootstrap = bootstrap_token.encode("utf-8") if bootstrap_token else None

    def actor_for(self, authorization: str | None) -> str:
        """The actor name for an `Authorization` header, or Unauthorized."""
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
