"""APNs pushes for MDM: `POST {APNS_URL}/3/device/<hex token>` with `{"mdm": PushMagic}` over one
HTTP/2 connection (many concurrent streams), the push certificate as TLS client certificate.

The push worker consumes `push.requested` in batches, coalesces hosts, and never runs in the HTTP
service's request path.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from .store import HostStore, PushTarget

log = logging.getLogger(__name__)

# APNs reasons that mean the token will never work again for this topic.
PERMANENT_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken"}
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class PushOutcome:
    host_uuid: str
    status: int  # 0 when no HTTP answer
    reason: str

    @property
    def delivered(self) -> bool:
        return self.status == 200

    @property
    def token_invalid(self) -> bool:
        return self.status == 410 or self.reason in PERMANENT_REASONS

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


class ApnsClient:
    def __init__(self, base_url: str, cert_path: str, key_path: str, ca_path: str | None = None,
                 concurrency: int = 64, timeout: float = 10.0):
        self._base_url = base_url.rstrip("/")
        tls = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        tls.load_cert_chain(cert_path, key_path)  # the MDM push certificate authenticates us
        self._client = httpx.Client(
            http2=True, verify=tls,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="apns")

    def _send_one(self, target: PushTarget) -> PushOutcome:
        url = f"{self._base_url}/3/device/{target.token.hex()}"
        headers = {"apns-push-type": "mdm", "apns-priority": "10", "apns-expiration": "0"}
        if target.topic:
            headers["apns-topic"] = target.topic
        try:
            response = self._client.post(url, json={"mdm": target.push_magic}, headers=headers)
        except httpx.HTTPError as exc:
            return PushOutcome(target.host_uuid, 0, exc.__class__.__name__)
        reason = ""
        if response.status_code != 200:
            try:
                reason = str(response.json().get("reason", ""))
            except ValueError:
                reason = response.text[:100]
        return PushOutcome(target.host_uuid, response.status_code, reason)

    def send(self, targets: Iterable[PushTarget]) -> list[PushOutcome]:
        return list(self._pool.map(self._send_one, targets))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()


class PushSender:
    """Sends pushes for host UUIDs: loads tokens in one query, retries transient failures with
    backoff, and marks tokens APNs rejected for good."""

    def __init__(self, db, hosts: HostStore, apns: ApnsClient | None, backoff: float = 0.5):
        self._db = db
        self._hosts = hosts
        self._apns = apns
        self._backoff = backoff

    def push_hosts(self, host_uuids: list[str]) -> list[PushOutcome]:
        unique = sorted(set(host_uuids))
        if self._apns is None:
            log.warning("push skipped: APNS_CERT/APNS_KEY not configured",
                        extra={"hosts": len(unique)})
            return []
        with self._db.transaction() as conn:
            targets = self._hosts.push_targets(conn, unique)
        outcomes: dict[str, PushOutcome] = {}
        pending = targets
        for attempt in range(MAX_ATTEMPTS):
            results = self._apns.send(pending)
            outcomes.update({o.host_uuid: o for o in results})
            retry = {o.host_uuid for o in results if o.retryable}
            pending = [t for t in pending if t.host_uuid in retry]
            if not pending:
                break
            if attempt + 1 < MAX_ATTEMPTS:
                time.sleep(self._backoff * (2 ** attempt))
        invalid = [o.host_uuid for o in outcomes.values() if o.token_invalid]
        if invalid:
            with self._db.transaction() as conn:
                self._hosts.mark_token_invalid(conn, invalid)
        delivered = sum(o.delivered for o in outcomes.values())
        failed = [o for o in outcomes.values() if not o.delivered]
        log.info("pushes sent", extra={"requested": len(unique), "delivered": delivered,
                                       "invalid_tokens": len(invalid), "failed": len(failed)})
        return list(outcomes.values())
