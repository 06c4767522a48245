"""What a `config.changed` event carries: the changed certificate authority, configuration
profile (with its scope: team and labels), label, or host's team as it is after the change (or
null once deleted), so that the profile-processor keeps its
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
LABEL = "label"
HOST_TEAM = "host_team"
KINDS = (CERTIFICATE_AUTHORITY, PROFILE, LABEL, HOST_TEAM)
# A profile's label rule (Fleet's names): hosts in all of `include_all`, in any of `include_any`,
# in none of `exclude_any`.
LABEL_MODES = ("include_all", "include_any", "exclude_any")


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
    team_id: int | None = None  # None: hosts with no team
    labels: tuple[tuple[str, int], ...] = ()  # (mode, label id)


@dataclass(frozen=True)
class LabelState:
    id: int
    name: str
    criteria: dict[str, str] | None  # None: a manual label, its hosts listed
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class HostTeamState:
    host_uuid: str
    team_id: int | None


def certificate_authority_state(row: Any) -> dict[str, Any]:
    """A CA row of admin-config (CertificateAuthorityRow) as an event carries it."""
    return {"id": row.id, "name": row.name, "url": row.url,
            "challenge_encrypted": _b64(row.challenge_encrypted),
            "ca_certificates_pem": row.ca_certificates_pem,
            "max_concurrent_requests": row.max_concurrent_requests,
            "max_issuance_per_second": row.max_issuance_per_second,
            "updated_at": row.updated_at.isoformat()}


def profile_state(row: dict[str, Any]) -> dict[str, Any]:
    """A profile row of admin-config (with its CA ids, team and labels: `labels` maps each mode
    of LABEL_MODES to label ids) as an event carries it."""
    labels = row.get("labels") or {}
    return {"uuid": row["uuid"], "identifier": row["identifier"], "name": row["name"],
            "raw": _b64(bytes(row["raw"])), "checksum": bytes(row["checksum"]).hex(),
            "has_scep_payload": bool(row["has_scep_payload"]),
            "ca_ids": sorted(int(i) for i in row["ca_ids"]),
            "team_id": None if row.get("team_id") is None else int(row["team_id"]),
            "labels": {mode: sorted(int(i) for i in labels.get(mode, ())) for mode in LABEL_MODES}}


def label_state(label_id: int, name: str, criteria: dict[str, str] | None,
                hosts: list[str]) -> dict[str, Any]:
    """A label of admin-config as an event carries it: a dynamic label its criteria
    (mdmscep_common.label_criteria), a manual one its hosts."""
    return {"id": label_id, "name": name, "criteria": criteria,
            "hosts": [] if criteria is not None else sorted(hosts)}


def host_team_state(host_uuid: str, team_id: int | None) -> dict[str, Any]:
    return {"host_uuid": host_uuid, "team_id": team_id}


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
    """Events published before profiles had a scope carry none: no team, no labels."""
    try:
        team_id = state.get("team_id")
        labels = state.get("labels") or {}
        scope = tuple((mode, int(i)) for mode in LABEL_MODES for i in labels.get(mode) or ())
        return ProfileState(_text(state["uuid"]), _text(state["identifier"]), _text(state["name"]),
                            _unb64(state["raw"]), bytes.fromhex(_text(state["checksum"])),
                            bool(state["has_scep_payload"]),
                            tuple(int(i) for i in state["ca_ids"]),
                            None if team_id is None else _int(team_id), scope)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedState(f"profile state: {exc}") from None


def read_label_state(state: Any) -> LabelState:
    try:
        criteria = state["criteria"]
        if criteria is not None and not (isinstance(criteria, dict)
                                         and all(isinstance(v, str) for v in criteria.values())):
            raise TypeError("criteria must be an object of text")
        return LabelState(_int(state["id"]), _text(state["name"]), criteria,
                          tuple(_text(h) for h in state["hosts"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedState(f"label state: {exc}") from None


def read_host_team_state(state: Any) -> HostTeamState:
    try:
        team_id = state["team_id"]
        return HostTeamState(_text(state["host_uuid"]), None if team_id is None else _int(team_id))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedState(f"host team state: {exc}") from None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


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
