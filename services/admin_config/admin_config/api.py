"""HTTP views of the admin API: translate HTTP to a service call, nothing more."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from mdmscep_common.http import request_body

from .errors import BadRequest
from .host_registry_client import HOST_FACTS

api = Blueprint("api", __name__, url_prefix="/api/v1/fleet")

MAX_PER_PAGE = 1000
MAX_PAGE = 1_000_000


def _services():
    return current_app.extensions["admin_config"]


@api.before_request
def authenticate():
    auth = _services().auth
    # Several X-Forwarded-For lines reach WSGI as one, joined in order (the last from the proxy).
    client = auth.client(request.remote_addr, request.headers.get("X-Forwarded-For"))
    g.actor = auth.actor_for(request.headers.get("Authorization"), client=client)
    # PostgreSQL text cannot hold NUL: such a parameter can only be bad input.
    if "\x00" in request.path or any("\x00" in v for v in request.args.values()):
        raise BadRequest("Parameters cannot contain NUL characters",
                         [{"name": "path", "reason": "NUL character"}])


def _page_args() -> tuple[int, int]:
    def number(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name} must be an integer",
                             [{"name": name, "reason": "must be an integer"}]) from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
            raise BadRequest(f"{name} must be {bound}", [{"name": name, "reason": f"must be {bound}"}])
        return value
    return number("page", 0, 0, MAX_PAGE), number("per_page", 100, 1, MAX_PER_PAGE)


def _listing(key: str, items: list, total: int, page: int, per_page: int):
    return jsonify({key: items, "meta": {"total": total, "page": page, "per_page": per_page}})


def _text_arg(name: str) -> str | None:
    value = request.args.get(name)
    return value if value not in (None, "") else None


def _json_body() -> Any:
    """The JSON body, None when there is none or it is not JSON (the caller says what it needs)."""
    raw = request_body()  # 413 for a chunked body over the limit, not a truncated-JSON 400
    try:
        return json.loads(raw) if request.is_json else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return None


def _json_object(key: str) -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"The body must be a JSON object with a {key!r} object",
                         [{"name": key, "reason": "missing or not an object"}])
    return body[key]


@api.post("/certificate_authorities")
def create_certificate_authority():
    ca = _services().certificate_authorities.create(_json_object("custom_scep_proxy"), g.actor)
    return jsonify(ca.summary())


@api.get("/certificate_authorities")
def list_certificate_authorities():
    page, per_page = _page_args()
    cas, total = _services().certificate_authorities.list(page, per_page)
    return _listing("certificate_authorities", [ca.summary() for ca in cas], total, page, per_page)


@api.get("/certificate_authorities/<int:ca_id>")
def get_certificate_authority(ca_id: int):
    return jsonify(_services().certificate_authorities.get(ca_id).detail())


@api.patch("/certificate_authorities/<int:ca_id>")
def edit_certificate_authority(ca_id: int):
    ca = _services().certificate_authorities.edit(ca_id, _json_object("custom_scep_proxy"), g.actor)
    return jsonify(ca.detail())


@api.get("/certificate_authorities/<int:ca_id>/stats")
def certificate_authority_stats(ca_id: int):
    return jsonify(_services().certificate_authorities.stats(ca_id))


@api.delete("/certificate_authorities/<int:ca_id>")
def delete_certificate_authority(ca_id: int):
    _services().certificate_authorities.delete(ca_id, g.actor)
    return "", 204


@api.get("/activities")
def list_activities():
    page, per_page = _page_args()
    items, total = _services().activities.list(page, per_page, _text_arg("type"), _text_arg("actor"))
    return _listing("activities", items, total, page, per_page)


def _uploaded_profile() -> bytes:
    upload = request.files.get("profile")
    if upload is None:
        raise BadRequest("Send the profile as the multipart form field 'profile'",
                         [{"name": "profile", "reason": "missing"}])
    return upload.read()


@api.post("/configuration_profiles")
def upload_configuration_profile():
    return jsonify({"profile_uuid": _services().profiles.upload(_uploaded_profile(), g.actor)})


@api.put("/configuration_profiles/<profile_uuid>")
def replace_configuration_profile(profile_uuid: str):
    return jsonify(_services().profiles.replace(profile_uuid, _uploaded_profile(), g.actor))


@api.get("/configuration_profiles")
def list_configuration_profiles():
    page, per_page = _page_args()
    items, total = _services().profiles.list(page, per_page)
    return _listing("profiles", items, total, page, per_page)


@api.get("/configuration_profiles/<profile_uuid>/summary")
def configuration_profile_summary(profile_uuid: str):
    return jsonify(_services().profiles.summary(profile_uuid))


@api.get("/configuration_profiles/<profile_uuid>/hosts")
def configuration_profile_hosts(profile_uuid: str):
    page, per_page = _page_args()
    items, total = _services().profiles.hosts(profile_uuid, _text_arg("status"), page, per_page)
    return _listing("hosts", items, total, page, per_page)


@api.post("/configuration_profiles/<profile_uuid>/retry_failed")
def retry_failed_hosts(profile_uuid: str):
    return jsonify({"hosts": _services().profiles.retry_failed(profile_uuid, g.actor)}), 202


@api.post("/hosts/<host_uuid>/configuration_profiles/<profile_uuid>/resend")
def resend_configuration_profile(host_uuid: str, profile_uuid: str):
    _services().profiles.resend(host_uuid, profile_uuid, g.actor)
    return jsonify({}), 202


@api.delete("/configuration_profiles/<profile_uuid>")
def delete_configuration_profile(profile_uuid: str):
    _services().profiles.delete(profile_uuid, g.actor)
    return "", 204


@api.get("/hosts/<host_uuid>/configuration_profiles")
def host_configuration_profiles(host_uuid: str):
    return jsonify({"profiles": _services().host_profiles.for_host(host_uuid)})


@api.get("/hosts/<host_uuid>/certificates")
def host_certificates(host_uuid: str):
    return jsonify({"certificates": _services().certificates.for_host(host_uuid)})


@api.get("/certificates")
def list_certificates():
    page, per_page = _page_args()
    items, total = _services().certificates.expiring(request.args.get("expiring_within_days"),
                                                     page, per_page)
    return _listing("certificates", items, total, page, per_page)


@api.get("/hosts")
def list_hosts():
    page, per_page = _page_args()
    items, total = _services().hosts.list(page, per_page, _text_arg("status"),
                                          _text_arg("profile_uuid"), _text_arg("query"),
                                          {name: _text_arg(name) for name in HOST_FACTS})
    return _listing("hosts", items, total, page, per_page)


@api.get("/hosts/<host_uuid>")
def host_detail(host_uuid: str):
    return jsonify(_services().hosts.detail(host_uuid))


@api.delete("/hosts/<host_uuid>")
def delete_host(host_uuid: str):
    _services().hosts.delete(host_uuid, g.actor)
    return "", 204


@api.post("/api_tokens")
def create_api_token():
    body = _json_body()
    name = body.get("name") if isinstance(body, dict) else None
    return jsonify(_services().tokens.create(name, g.actor))


@api.get("/api_tokens")
def list_api_tokens():
    return jsonify({"api_tokens": _services().tokens.list()})


@api.delete("/api_tokens/<name>")
def revoke_api_token(name: str):
    _services().tokens.revoke(name, g.actor)
    return "", 204


@api.get("/openapi.json")
def openapi_document():
    from .openapi import document
    return jsonify(document())
