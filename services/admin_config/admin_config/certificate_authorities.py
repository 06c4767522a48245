"""Certificate authorities (custom SCEP proxies): validation, probing, encrypted storage, events.

The probe (a network call of up to 30 s) runs before the transaction opens, so no database
connection or lock is held while a slow CA answers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mdmscep_common import bus, config_events
from mdmscep_common.ca_addresses import forbidden_host
from mdmscep_common.ca_keys import challenge_context
from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.logs import register_secret
from mdmscep_common.outbox import Events

from .delivery_directory_client import IssuanceRate
from .errors import BadRequest, Conflict, NotFound, ServiceUnavailable, UnprocessableEntity, field_error
from .scep_gateway import CaRequestStats, GatewayUnavailable, ProbeOutcome
from .store import ActivityStore, CertificateAuthorityRow, CertificateAuthorityStore, NameTaken, ProfileStore

log = logging.getLogger(__name__)

CA_TYPE = "custom_scep_proxy"
DEFAULT_MAX_CONCURRENT = 4
MASKED_CHALLENGE = "********"
NAME_MAX_CHARS = 255
URL_MAX_CHARS = 2048
_NAME = re.compile(r"^[A-Za-z0-9_]+$")

EMPTY_CHALLENGE = "Custom SCEP Proxy challenge cannot be empty"
INVALID_SCEP_URL = "Invalid SCEP URL. Please correct and try again."
STATS_WINDOW_SECONDS = 3600


class Prober(Protocol):
    def probe(self, url: str) -> ProbeOutcome: ...


class CaRequestRecords(Protocol):
    """scep-proxy's record of the requests it sent a CA (ScepGateway.CaRequestStats)."""

    def ca_request_stats(self, ca_name: str, window_seconds: int) -> CaRequestStats: ...


class PacedDeliveries(Protocol):
    """The processor's deliveries (DeliveryDirectory.CountDeliveries) and their pace per CA
    (DeliveryDirectory.GetIssuanceRate)."""

    def count_deliveries(self, profile_uuid: str = "", host_uuid: str = "",
                         paced_ca_name: str = "") -> dict[str, int]: ...

    def issuance_rate(self, ca_id: int) -> IssuanceRate | None: ...


class Database(Protocol):
    def transaction(self): ...


@dataclass(frozen=True)
class CertificateAuthority:
    id: int
    name: str
    type: str
    url: str
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT
    max_issuance_per_second: float | None = None

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type}

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "url": self.url, "challenge": MASKED_CHALLENGE,
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_issuance_per_second": self.max_issuance_per_second}


def validate_limits(body: dict[str, Any], current: CertificateAuthority | None
                    ) -> tuple[int, float | None]:
    """How hard the proxy and the processor may drive this CA (its admin knows what it takes)."""
    concurrent = body.get("max_concurrent_requests",
                          current.max_concurrent_requests if current else DEFAULT_MAX_CONCURRENT)
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or not 1 <= concurrent <= 1000:
        raise field_error(UnprocessableEntity, "max_concurrent_requests",
                          "max_concurrent_requests must be an integer from 1 to 1000")
    rate = body.get("max_issuance_per_second",
                    current.max_issuance_per_second if current else None)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not 0.01 <= rate <= 10_000):
        raise field_error(UnprocessableEntity, "max_issuance_per_second",
                          "max_issuance_per_second must be a number from 0.01 to 10000, or null")
    return concurrent, float(rate) if rate is not None else None


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise field_error(UnprocessableEntity, "name", "Custom SCEP Proxy name cannot be empty")
    if len(name) > NAME_MAX_CHARS:
        raise field_error(UnprocessableEntity, "name",
                          f"Custom SCEP Proxy name cannot be longer than {NAME_MAX_CHARS} characters")
    if not _NAME.match(name):
        raise field_error(UnprocessableEntity, "name",
                          "Invalid characters in the name field. Only letters, numbers and "
                          "underscores are allowed.")
    return name


def validate_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise field_error(UnprocessableEntity, "url", "Custom SCEP Proxy URL cannot be empty")
    if len(url) > URL_MAX_CHARS:
        raise field_error(UnprocessableEntity, "url",
                          f"Custom SCEP Proxy URL cannot be longer than {URL_MAX_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise field_error(UnprocessableEntity, "url",
                          "Custom SCEP Proxy URL must be an http or https URL")
    # What the URL itself says (an address or a metadata service's name) is a 422 like the
    # scheme; a name that resolves to such an address fails the probe (400, "Invalid SCEP
    # URL"), and scep-proxy refuses to connect to it later too (mdmscep_common/ca_addresses.py).
    if forbidden_host(parts.hostname):
        raise field_error(UnprocessableEntity, "url",
                          "Custom SCEP Proxy URL cannot point to a link-local or cloud metadata "
                          "address")
    return url


# What an XML 1.0 profile can carry (tab, LF, CR and the rest; no other C0 control, no lone
# surrogate, no U+FFFE/U+FFFF): any other character would make every rendered profile unreadable.
_NOT_IN_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
UNPRINTABLE_CHALLENGE = ("Custom SCEP Proxy challenge contains a character a configuration "
                         "profile cannot carry (a control character or a lone surrogate)")


def validate_challenge(challenge: Any) -> str:
    if not isinstance(challenge, str) or challenge == "" or challenge == MASKED_CHALLENGE:
        raise field_error(BadRequest, "challenge", EMPTY_CHALLENGE)
    if _NOT_IN_XML.search(challenge):
        raise field_error(BadRequest, "challenge", UNPRINTABLE_CHALLENGE)
    return challenge


def _pem(ders: list[bytes]) -> str:
    out = []
    for der in ders:
        try:
            out.append(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode())
        except ValueError:
            continue
    return "".join(out)


class CertificateAuthorityService:
    def __init__(self, db: Database, store: CertificateAuthorityStore, activities: ActivityStore,
                 secrets: SecretBox, prober: Prober, events: Events, profiles: ProfileStore,
                 *, ca_requests: CaRequestRecords, deliveries: PacedDeliveries):
        self._db = db
        self._ca_requests = ca_requests
        self._deliveries = deliveries
        self._profiles = profiles
        self._store = store
        self._activities = activities
        self._secrets = secrets
        self._prober = prober
        self._events = events  # the outbox: events commit with the change they announce

    def _probe(self, url: str) -> str:
        """PEM of the CA certificates at `url`, or 400 with the probe's reason."""
        try:
            outcome = self._prober.probe(url)
        except GatewayUnavailable as exc:
            raise ServiceUnavailable("The SCEP gateway is unavailable; try again shortly.",
                                     [{"name": "url", "reason": str(exc)}]) from None
        if not outcome.ok or not outcome.ca_certificates_der:
            raise field_error(BadRequest, "url", outcome.reason or "no CA certificate returned",
                              INVALID_SCEP_URL)
        return _pem(outcome.ca_certificates_der)

    def create(self, body: dict[str, Any], actor: str) -> CertificateAuthority:
        name = validate_name(body.get("name"))
        url = validate_url(body.get("url"))
        challenge = validate_challenge(body.get("challenge"))
        register_secret(challenge)
        limits = validate_limits(body, None)
        with self._db.transaction() as conn:
            if self._store.name_exists(conn, name):
                raise self._name_taken(name)
        ca_pem = self._probe(url)
        encrypted = self._secrets.encrypt(challenge, challenge_context(name))
        try:
            with self._db.transaction() as conn:
                row = self._store.insert(conn, name, url, encrypted, ca_pem)
                if limits != (DEFAULT_MAX_CONCURRENT, None):
                    row = self._store.set_limits(conn, row.id, *limits)
                self._activities.record(conn, "added_custom_scep_proxy", actor, {"name": name})
                self._changed(conn, "added", row, resend=False)
        except NameTaken:
            raise self._name_taken(name) from None
        return _public(row)

    def get(self, ca_id: int) -> CertificateAuthority:
        with self._db.transaction() as conn:
            row = self._store.get(conn, ca_id)
        if row is None:
            raise NotFound(f"Certificate authority {ca_id} was not found")
        return _public(row)

    def list(self, page: int, per_page: int) -> tuple[list[CertificateAuthority], int]:
        with self._db.transaction() as conn:
            return ([_public(r) for r in self._store.list(conn, per_page, page * per_page)],
                    self._store.count(conn))

    def edit(self, ca_id: int, body: dict[str, Any], actor: str) -> CertificateAuthority:
        current = self.get(ca_id)
        if "name" in body and body["name"] != current.name:
            raise field_error(UnprocessableEntity, "name",
                              "The name of a certificate authority cannot be changed")
        new_url = validate_url(body["url"]) if "url" in body and body["url"] is not None else None
        has_challenge = "challenge" in body and body["challenge"] is not None
        if new_url is not None and new_url != current.url and not has_challenge:
            raise field_error(UnprocessableEntity, "challenge",
                              "A new URL needs the challenge of that SCEP server too")
        new_challenge = validate_challenge(body["challenge"]) if has_challenge else None
        if new_challenge:
            register_secret(new_challenge)
        limits = validate_limits(body, current)
        limits_changed = limits != (current.max_concurrent_requests, current.max_issuance_per_second)
        url_changed = new_url is not None and new_url != current.url
        ca_pem = self._probe(new_url) if url_changed else None
        with self._db.transaction() as conn:
            row = self._store.get(conn, ca_id, for_update=True)
            if row is None:
                raise NotFound(f"Certificate authority {ca_id} was not found")
            context = challenge_context(row.name)
            try:
                old_challenge = self._secrets.decrypt(row.challenge_encrypted, context)
            except DecryptionError:
                # Stored under another SERVER_PRIVATE_KEY: re-entering the challenge repairs it.
                old_challenge = None
            challenge_changed = new_challenge is not None and new_challenge != old_challenge
            if limits_changed:
                row = self._store.set_limits(conn, ca_id, *limits)
            if not url_changed and not challenge_changed:
                if limits_changed:
                    self._activities.record(conn, "edited_custom_scep_proxy", actor,
                                            {"name": row.name, "limits": True})
                    # The processor paces by them and hands them to the proxy: no re-send.
                    self._changed(conn, "edited", row, resend=False)
                return _public(row)
            encrypted = (self._secrets.encrypt(new_challenge, context) if challenge_changed
                         else row.challenge_encrypted)
            row = self._store.update(conn, ca_id, new_url if url_changed else row.url, encrypted,
                                     ca_pem if url_changed else row.ca_certificates_pem)
            self._activities.record(conn, "edited_custom_scep_proxy", actor, {"name": row.name})
            self._changed(conn, "edited", row, resend=True)
        return _public(row)

    def stats(self, ca_id: int) -> dict[str, Any]:
        """What this CA went through over the last hour: PKIOperations issued or failed (by the
        proxy's records), requests in flight now (slots held by proxy replicas), deliveries
        waiting for their issuance turn, average latency, and the issuance rate the processor
        learned from its answers (null while the processor does not know the CA yet)."""
        ca = self.get(ca_id)
        # The proxy keeps the requests and holds the slots; the processor paces the deliveries.
        sent = self._ca_requests.ca_request_stats(ca.name, STATS_WINDOW_SECONDS)
        waiting = sum(self._deliveries.count_deliveries(paced_ca_name=ca.name).values())
        rate = self._deliveries.issuance_rate(ca.id)
        latency = sent.average_latency_ms
        return {"id": ca.id, "name": ca.name, "window_seconds": STATS_WINDOW_SECONDS,
                "issued": sent.issued, "failed": sent.failed, "refused_busy": sent.refused_busy,
                "in_flight": sent.in_flight, "waiting": waiting,
                "average_latency_ms": round(latency, 1) if latency is not None else None,
                "max_concurrent_requests": ca.max_concurrent_requests,
                "issuance_rate": rate.as_json() if rate is not None else None}

    def delete(self, ca_id: int, actor: str) -> None:
        with self._db.transaction() as conn:
            row = self._store.get(conn, ca_id, for_update=True)
            if row is None:
                raise NotFound(f"Certificate authority {ca_id} was not found")
            users = self._profiles.names_using_ca(conn, ca_id)
            if users:
                raise Conflict(f"Certificate authority {row.name} is used by "
                               f"{len(users)} profile(s): {', '.join(users[:10])}. "
                               "Delete those profiles first.",
                               [{"name": "id", "reason": "in use by configuration profiles"}])
            self._store.delete(conn, ca_id)
            self._activities.record(conn, "deleted_custom_scep_proxy", actor, {"name": row.name})
            self._changed(conn, "deleted", row, resend=False)

    @staticmethod
    def _name_taken(name: str) -> Conflict:
        return field_error(Conflict, "name",
                           f"A certificate authority named {name} already exists")

    def _changed(self, conn, action: str, row: CertificateAuthorityRow, resend: bool) -> None:
        """Tell the processor and the proxies, in the change's transaction (the outbox)."""
        announce_ca(self._events, conn, action, row, resend)


def announce_ca(events: Events, conn, action: str, row: CertificateAuthorityRow,
                resend: bool) -> None:
    """config.changed for a CA, with its state as committed (none once deleted): the
    processor's copy of it (mdmscep_common.config_events). Called after the row changed."""
    events.add(conn, bus.CONFIG_CHANGED,
               {"kind": config_events.CERTIFICATE_AUTHORITY, "action": action, "id": row.id,
                "name": row.name, "resend": resend,
                "certificate_authority": (None if action == "deleted"
                                          else config_events.certificate_authority_state(row))})


def _public(row: CertificateAuthorityRow) -> CertificateAuthority:
    return CertificateAuthority(row.id, row.name, row.type, row.url, row.max_concurrent_requests,
                                row.max_issuance_per_second)
