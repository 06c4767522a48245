"""What a `config.changed` event carries: the changed certificate authority or configuration
profile as it is after the change (or null once deleted), so that the profile-processor keeps its
own copy (its read model) without reading admin-config's tables. admin-config writes these bodies
(`certificate_authority_state`, `profile_state`); the processor reads them back (`CaState`,
`ProfileState`). Bytes travel in base64; a CA's challenge only as admin-config stored it, sealed
under SERVER_PRIVATE_KEY.

Which state is newest comes from the event's `sequence` (mdmscep_common.outbox): admin-config adds
the event after it changed, and so locked, the row, so one row's events are numbered in the order
of its changes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CERTIFICATE_AUTHORITY = "certificate_authority"
PROFILE = "profile"


class MalformedState(ValueError):
    """A config.changed body whose state cannot be read."""


@dataclass(frozen=True)
class CaState:
    id: int
    name: str
    url: str
    challenge_encrypted: bytes
    ca_certificates_pem: str
    max_concurrent_requests: int
    max_issuance_per_second: float | None
    # The revision that re-sends its profiles when it moves (the processor's DeliveryStore).
    updated_at: datetime


@dataclass(frozen=True)
class ProfileState:
    uuid: str
    identifier: str
    name: str
    raw: bytes
    checksum: bytes
    has_scep_payload: bool
    ca_ids: tuple[int, ...]


def certificate_authority_state(row: Any) -> dict[str, Any]:
    """A CA row of admin-config (CertificateAuthorityRow) as an event carries it."""
    return {"id": row.id, "name": row.name, "url": row.url,
            "challenge_encrypted": _b64(row.challenge_encrypted),
            "ca_certificates_pem": row.ca_certificates_pem,
            "max_concurrent_requests": row.max_concurrent_requests,
            "max_issuance_per_second": row.max_issuance_per_second,
            "updated_at": row.updated_at.isoformat()}


def profile_state(row: dict[str, Any]) -> dict[str, Any]:
    """A profile row of admin-config (with its CA ids) as an event carries it."""
    return {"uuid": row["uuid"], "identifier": row["identifier"], "name": row["name"],
            "raw": _b64(bytes(row["raw"])), "checksum": bytes(row["checksum"]).hex(),
            "has_scep_payload": bool(row["has_scep_payload"]),
            "ca_ids": sorted(int(i) for i in row["ca_ids"])}


def read_ca_state(state: Any) -> CaState:
    try:
        limit = state["max_issuance_per_second"]
        return CaState(int(state["id"]), _text(state["name"]), _text(state["url"]),
                       _unb64(state["challenge_encrypted"]), _text(state["ca_certificates_pem"]),
                       int(state["max_concurrent_requests"]),
                       None if limit is None else float(limit),
                       datetime.fromisoformat(_text(state["updated_at"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedState(f"certificate authority state: {exc}") from None


def read_profile_state(state: Any) -> ProfileState:
    try:
        return ProfileState(_text(state["uuid"]), _text(state["identifier"]), _text(state["name"]),
                            _unb64(state["raw"]), bytes.fromhex(_text(state["checksum"])),
                            bool(state["has_scep_payload"]),
                            tuple(int(i) for i in state["ca_ids"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedState(f"profile state: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    try:
        return base64.b64decode(_text(text), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value
