"""Apple MDM check-in and command-result messages: plist parsing only, no HTTP or database.

Apple: Device Management → Check-in (Authenticate, TokenUpdate, CheckOut) and Commands →
command responses (Idle, Acknowledged, Error, CommandFormatError, NotNow).
"""

from __future__ import annotations

import base64
import plistlib
from dataclasses import dataclass, field
from typing import Any
from xml.parsers.expat import ExpatError

from .plist_bounds import PlistTooComplex, check_plist_bounds

CHECKIN_TYPES = {"Authenticate", "TokenUpdate", "CheckOut"}
RESULT_STATUSES = {"Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow"}
MAX_UDID_CHARS = 64


class ProtocolError(ValueError):
    """The message is not a well-formed MDM message; answered with 400."""


def parse_plist(body: bytes) -> dict[str, Any]:
    if not body:
        raise ProtocolError("empty body")
    try:
        # Before plistlib: a small plist can expand to far more work than its size (see
        # plist_bounds), and this runs before any transaction or lock is taken.
        check_plist_bounds(body)
    except PlistTooComplex as exc:
        raise ProtocolError(f"body is not an acceptable property list: {exc}") from None
    try:
        message = plistlib.loads(body)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, LookupError,
            OverflowError, AttributeError, RecursionError) as exc:
        raise ProtocolError(f"body is not a property list: {exc.__class__.__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("property list is not a dictionary")
    return message


def _text(message: dict[str, Any], key: str, required: bool = False) -> str:
    value = message.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not a string")
    return value


def _udid(message: dict[str, Any]) -> str:
    udid = _text(message, "UDID", required=True)
    if not udid or len(udid) > MAX_UDID_CHARS or not udid.isprintable() or "," in udid:
        raise ProtocolError("UDID is not a device identifier")
    return udid


@dataclass(frozen=True)
class Authenticate:
    udid: str
    serial_number: str
    topic: str
    device_name: str
    model: str
    os_version: str


@dataclass(frozen=True)
class TokenUpdate:
    udid: str
    topic: str
    token: bytes
    push_magic: str


@dataclass(frozen=True)
class CheckOut:
    udid: str


CheckinMessage = Authenticate | TokenUpdate | CheckOut


def parse_checkin(body: bytes) -> CheckinMessage:
    message = parse_plist(body)
    kind = _text(message, "MessageType", required=True)
    if kind not in CHECKIN_TYPES:
        raise ProtocolError(f"unsupported check-in MessageType {kind[:40]!r}")
    udid = _udid(message)
    if kind == "Authenticate":
        return Authenticate(udid, _text(message, "SerialNumber")[:64], _text(message, "Topic"),
                            _text(message, "DeviceName")[:255], _text(message, "Model")[:64],
                            _text(message, "OSVersion")[:32])
    if kind == "TokenUpdate":
        token = message.get("Token")
        if not isinstance(token, bytes) or not token or len(token) > 256:
            raise ProtocolError("Token is missing or not data")
        push_magic = _text(message, "PushMagic", required=True)
        if not push_magic or len(push_magic) > 256:
            raise ProtocolError("PushMagic is missing")
        return TokenUpdate(udid, _text(message, "Topic"), token, push_magic)
    return CheckOut(udid)


@dataclass(frozen=True)
class CommandResult:
    udid: str
    status: str
    command_uuid: str
    # What the result reports for `command.result`, JSON-safe, built when the body is parsed
    # (before any transaction): ErrorChain, ProfileList, CertificateList.
    details: dict[str, Any] = field(repr=False)
    # A DeviceInformation answer's QueryResponses (mdm-endpoint's own: host_facts.py).
    query_responses: dict[str, Any] = field(default_factory=dict, repr=False)

    def event(self, request_type: str | None) -> dict[str, Any]:
        """The `command.result` message body (JSON-safe)."""
        return {"host_uuid": self.udid, "command_uuid": self.command_uuid,
                "request_type": request_type or "", "status": self.status, **self.details}


def _result_details(message: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {}
    chain = message.get("ErrorChain")
    if isinstance(chain, list):
        details["error_chain"] = [_json_safe(item) for item in chain if isinstance(item, dict)]
    profiles = message.get("ProfileList")
    if isinstance(profiles, list):
        details["profile_list"] = [
            {"identifier": _string(p, "PayloadIdentifier"), "uuid": _string(p, "PayloadUUID"),
             "display_name": _string(p, "PayloadDisplayName")}
            for p in profiles if isinstance(p, dict)]
    certificates = message.get("CertificateList")
    if isinstance(certificates, list):
        details["certificate_list"] = [
            {"common_name": _string(c, "CommonName"), "is_identity": bool(c.get("IsIdentity")),
             "data": base64.b64encode(c["Data"]).decode() if isinstance(c.get("Data"), bytes)
             else ""}
            for c in certificates if isinstance(c, dict)]
    return details


def _string(item: dict[str, Any], key: str) -> str:
    value = item.get(key, "")
    return value if isinstance(value, str) else ""


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def parse_result(body: bytes) -> CommandResult:
    message = parse_plist(body)
    status = _text(message, "Status", required=True)
    if status not in RESULT_STATUSES:
        raise ProtocolError(f"unsupported Status {status[:40]!r}")
    udid = _udid(message)
    command_uuid = _text(message, "CommandUUID")
    if status != "Idle" and not command_uuid:
        raise ProtocolError("CommandUUID is missing")
    if len(command_uuid) > 128:
        raise ProtocolError("CommandUUID is too long")
    responses = message.get("QueryResponses")
    return CommandResult(udid, status, command_uuid, _result_details(message),
                         responses if isinstance(responses, dict) else {})
