"""HTTP views of the admin API: translate HTTP to a service call, nothing more."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from .errors import BadRequest

api = Blueprint("api", __name__, url_prefix="/api/v1/fleet")

MAX_PER_PAGE = 1000


def _services():
    return current_app.extensions["admin_config"]


@api.before_request
def authenticate():
    g.actor = _services().auth.actor_for(request.headers.get("Authorization"))


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
    return number("page", 0, 0), number("per_page", 100, 1, MAX_PER_PAGE)


def _json_object(key: str) -> dict[str, Any]:
    body = request.get_json(silent=True)
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
    cas = _services().certificate_authorities.list(page, per_page)
    return jsonify({"certificate_authorities": [ca.summary() for ca in cas]})


@api.get("/certificate_authorities/<int:ca_id>")
def get_certificate_authority(ca_id: int):
    return jsonify(_services().certificate_authorities.get(ca_id).detail())


@api.patch("/certificate_authorities/<int:ca_id>")
def edit_certificate_authority(ca_id: int):
    ca = _services().certificate_authorities.edit(ca_id, _json_object("custom_scep_proxy"), g.actor)
    return jsonify(ca.detail())


@api.delete("/certificate_authorities/<int:ca_id>")
def delete_certificate_authority(ca_id: int):
    _services().certificate_authorities.delete(ca_id, g.actor)
    return "", 204


@api.get("/activities")
def list_activities():
    page, per_page = _page_args()
    return jsonify({"activities": _services().activities.list(page, per_page)})


@api.post("/configuration_profiles")
def upload_configuration_profile():
    upload = request.files.get("profile")
    if upload is None:
        raise BadRequest("Send the profile as the multipart form field 'profile'",
                         [{"name": "profile", "reason": "missing"}])
    return jsonify({"profile_uuid": _services().profiles.upload(upload.read(), g.actor)})


@api.get("/configuration_profiles")
def list_configuration_profiles():
    page, per_page = _page_args()
    return jsonify({"profiles": _services().profiles.list(page, per_page)})


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
    return jsonify({"certificates": _services().certificates.expiring(
        request.args.get("expiring_within_days"), page, per_page)})


@api.get("/hosts")
def list_hosts():
    page, per_page = _page_args()
    return jsonify({"hosts": _services().hosts.list(page, per_page)})


@api.get("/openapi.json")
def openapi_document():
    from .openapi import document
    return jsonify(document())
