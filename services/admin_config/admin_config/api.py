"""HTTP views of the admin API: translate HTTP to a service call, nothing more. Each route is
declared with the role it needs (`routes`, roles.py), checked before its view runs."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from mdmscep_common.http import request_body

from .configuration_profiles import LABEL_FIELDS
from .errors import BadRequest
from .host_registry_client import HOST_FACTS
from .roles import ADMIN, DEFAULT_ROLE, MAINTAINER, OBSERVER, ROLES
from .store import MAX_BIGINT

api = Blueprint("api", __name__, url_prefix="/api/v1/fleet")
PROFILE_MEDIA_TYPE = "application/x-apple-aspen-config"


class Routes:
    """The admin API's routes, each with the role it needs: `@routes.get("/hosts", OBSERVER)`
    registers the view on `api` and records its role here, the one place roles are stated.
    `authenticate` checks the role before any view runs, so a view cannot forget it; an endpoint
    of `api` declared around this table needs admin (fail closed), and create_app refuses to
    start with one (`undeclared`). The OpenAPI document states each operation's role from here."""

    def __init__(self, blueprint: Blueprint):
        self._blueprint = blueprint
        self.needed: dict[str, str] = {}  # Flask endpoint → role
        self.operations: dict[tuple[str, str], str] = {}  # (method, full Flask rule) → role

    def _route(self, method: str, rule: str, role: str):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} for {method} {rule}")

        def register(view):
            self.needed[f"{self._blueprint.name}.{view.__name__}"] = role
            self.operations[(method, f"{self._blueprint.url_prefix}{rule}")] = role
            return self._blueprint.route(rule, methods=[method])(view)
        return register

    def get(self, rule: str, role: str):
        return self._route("GET", rule, role)

    def post(self, rule: str, role: str):
        return self._route("POST", rule, role)

    def put(self, rule: str, role: str):
        return self._route("PUT", rule, role)

    def patch(self, rule: str, role: str):
        return self._route("PATCH", rule, role)

    def delete(self, rule: str, role: str):
        return self._route("DELETE", rule, role)

    def undeclared(self, app) -> list[str]:
        """Endpoints of the blueprint served by `app` that no declaration here gave a role."""
        prefix = f"{self._blueprint.name}."
        return sorted(rule.endpoint for rule in app.url_map.iter_rules()
                      if rule.endpoint.startswith(prefix) and rule.endpoint not in self.needed)


routes = Routes(api)

MAX_PER_PAGE = 1000
MAX_PAGE = 1_000_000


def _services():
    return current_app.extensions["admin_config"]


@api.before_request
def authenticate():
    auth = _services().auth
    # Several X-Forwarded-For lines reach WSGI as one, joined in order (the last from the proxy).
    client = auth.client(request.remote_addr, request.headers.get("X-Forwarded-For"))
    caller = auth.caller_for(request.headers.get("Authorization"), client=client)
    g.actor = caller.actor
    # Before the view runs: a call beyond the token's role is a 403 that changed nothing.
    caller.require(routes.needed.get(request.endpoint, ADMIN))
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


def _team_id(value: str | None) -> int | None:
    """A `team_id` query or form field: None when absent or empty, else a team id or 0 (no
    team); BadRequest otherwise."""
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_BIGINT:
        raise BadRequest("team_id must be a team's id (0: no team)",
                         [{"name": "team_id", "reason": "must be a non-negative integer"}])
    return int(value)


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


@routes.post("/certificate_authorities", ADMIN)
def create_certificate_authority():
    ca = _services().certificate_authorities.create(_json_object("custom_scep_proxy"), g.actor)
    return jsonify(ca.summary())


@routes.get("/certificate_authorities", OBSERVER)
def list_certificate_authorities():
    page, per_page = _page_args()
    cas, total = _services().certificate_authorities.list(page, per_page)
    return _listing("certificate_authorities", [ca.summary() for ca in cas], total, page, per_page)


@routes.get("/certificate_authorities/<int:ca_id>", OBSERVER)
def get_certificate_authority(ca_id: int):
    return jsonify(_services().certificate_authorities.get(ca_id).detail())


@routes.patch("/certificate_authorities/<int:ca_id>", ADMIN)
def edit_certificate_authority(ca_id: int):
    ca = _services().certificate_authorities.edit(ca_id, _json_object("custom_scep_proxy"), g.actor)
    return jsonify(ca.detail())


@routes.get("/certificate_authorities/<int:ca_id>/stats", OBSERVER)
def certificate_authority_stats(ca_id: int):
    return jsonify(_services().certificate_authorities.stats(ca_id))


@routes.delete("/certificate_authorities/<int:ca_id>", ADMIN)
def delete_certificate_authority(ca_id: int):
    _services().certificate_authorities.delete(ca_id, g.actor)
    return "", 204


@routes.get("/activities", OBSERVER)
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


@routes.post("/configuration_profiles", MAINTAINER)
def upload_configuration_profile():
    """Multipart: `profile`, and its scope: `team_id` (absent or 0: no team) and repeated
    `labels_include_all` / `labels_include_any` / `labels_exclude_any` (label names)."""
    raw = _uploaded_profile()
    team_id = _team_id(request.form.get("team_id")) or None
    labels = {field: request.form.getlist(field) for field in LABEL_FIELDS
              if field in request.form}
    return jsonify({"profile_uuid": _services().profiles.upload(raw, g.actor, team_id, labels)})


@routes.put("/configuration_profiles/<profile_uuid>", MAINTAINER)
def replace_configuration_profile(profile_uuid: str):
    return jsonify(_services().profiles.replace(profile_uuid, _uploaded_profile(), g.actor))


@routes.get("/configuration_profiles", OBSERVER)
def list_configuration_profiles():
    page, per_page = _page_args()
    items, total = _services().profiles.list(page, per_page, _team_id(request.args.get("team_id")))
    return _listing("profiles", items, total, page, per_page)


@routes.get("/configuration_profiles/<profile_uuid>", OBSERVER)
def get_configuration_profile(profile_uuid: str):
    """The profile; with `alt=media` (Fleet's spelling) its bytes as uploaded."""
    alt = _text_arg("alt")
    if alt is None:
        return jsonify(_services().profiles.get(profile_uuid))
    if alt != "media":
        raise BadRequest("alt must be media", [{"name": "alt", "reason": "only media is supported"}])
    identifier, raw = _services().profiles.content(profile_uuid)
    # The identifier is the uploader's text: only a plain file name reaches the header.
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", identifier)[:200] + ".mobileconfig"
    return Response(raw, mimetype=PROFILE_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Content-Type-Options": "nosniff"})


@routes.get("/configuration_profiles/<profile_uuid>/summary", OBSERVER)
def configuration_profile_summary(profile_uuid: str):
    return jsonify(_services().profiles.summary(profile_uuid))


@routes.get("/configuration_profiles/<profile_uuid>/hosts", OBSERVER)
def configuration_profile_hosts(profile_uuid: str):
    page, per_page = _page_args()
    items, total = _services().profiles.hosts(profile_uuid, _text_arg("status"), page, per_page)
    return _listing("hosts", items, total, page, per_page)


@routes.post("/configuration_profiles/<profile_uuid>/retry_failed", MAINTAINER)
def retry_failed_hosts(profile_uuid: str):
    return jsonify({"hosts": _services().profiles.retry_failed(profile_uuid, g.actor)}), 202


@routes.post("/hosts/<host_uuid>/configuration_profiles/<profile_uuid>/resend", MAINTAINER)
def resend_configuration_profile(host_uuid: str, profile_uuid: str):
    _services().profiles.resend(host_uuid, profile_uuid, g.actor)
    return jsonify({}), 202


@routes.delete("/configuration_profiles/<profile_uuid>", MAINTAINER)
def delete_configuration_profile(profile_uuid: str):
    _services().profiles.delete(profile_uuid, g.actor)
    return "", 204


@routes.get("/hosts/<host_uuid>/configuration_profiles", OBSERVER)
def host_configuration_profiles(host_uuid: str):
    return jsonify({"profiles": _services().host_profiles.for_host(host_uuid)})


@routes.get("/hosts/<host_uuid>/certificates", OBSERVER)
def host_certificates(host_uuid: str):
    return jsonify({"certificates": _services().certificates.for_host(host_uuid)})


@routes.get("/certificates", OBSERVER)
def list_certificates():
    page, per_page = _page_args()
    items, total = _services().certificates.expiring(request.args.get("expiring_within_days"),
                                                     page, per_page)
    return _listing("certificates", items, total, page, per_page)


@routes.get("/hosts", OBSERVER)
def list_hosts():
    page, per_page = _page_args()
    items, total = _services().hosts.list(page, per_page, _text_arg("status"),
                                          _text_arg("profile_uuid"), _text_arg("query"),
                                          {name: _text_arg(name) for name in HOST_FACTS},
                                          _team_id(request.args.get("team_id")))
    return _listing("hosts", items, total, page, per_page)


@routes.get("/hosts/<host_uuid>", OBSERVER)
def host_detail(host_uuid: str):
    return jsonify(_services().hosts.detail(host_uuid))


@routes.delete("/hosts/<host_uuid>", ADMIN)
def delete_host(host_uuid: str):
    _services().hosts.delete(host_uuid, g.actor)
    return "", 204


@routes.post("/hosts/transfer", ADMIN)
def transfer_hosts():
    body = _json_body()
    if not isinstance(body, dict) or "team_id" not in body:
        raise BadRequest("The body must be a JSON object with team_id (null: no team) and hosts",
                         [{"name": "team_id", "reason": "missing"}])
    return jsonify(_services().teams.transfer(body["team_id"], body.get("hosts"), g.actor))


@routes.post("/teams", ADMIN)
def create_team():
    body = _json_body()
    return jsonify({"team": _services().teams.create(
        body.get("name") if isinstance(body, dict) else None, g.actor)})


@routes.get("/teams", OBSERVER)
def list_teams():
    page, per_page = _page_args()
    items, total = _services().teams.list(page, per_page)
    return _listing("teams", items, total, page, per_page)


@routes.delete("/teams/<int:team_id>", ADMIN)
def delete_team(team_id: int):
    _services().teams.delete(team_id, g.actor)
    return "", 204


@routes.post("/labels", MAINTAINER)
def create_label():
    return jsonify({"label": _services().labels.create(_json_body(), g.actor)})


@routes.get("/labels", OBSERVER)
def list_labels():
    page, per_page = _page_args()
    items, total = _services().labels.list(page, per_page)
    return _listing("labels", items, total, page, per_page)


@routes.patch("/labels/<int:label_id>", MAINTAINER)
def edit_label(label_id: int):
    return jsonify({"label": _services().labels.edit(label_id, _json_body(), g.actor)})


@routes.delete("/labels/<int:label_id>", MAINTAINER)
def delete_label(label_id: int):
    _services().labels.delete(label_id, g.actor)
    return "", 204


@routes.post("/api_tokens", ADMIN)
def create_api_token():
    body = _json_body()
    body = body if isinstance(body, dict) else {}
    return jsonify(_services().tokens.create(body.get("name"), body.get("role", DEFAULT_ROLE),
                                             g.actor))


@routes.get("/api_tokens", OBSERVER)
def list_api_tokens():
    return jsonify({"api_tokens": _services().tokens.list()})


@routes.delete("/api_tokens/<name>", ADMIN)
def revoke_api_token(name: str):
    _services().tokens.revoke(name, g.actor)
    return "", 204


@routes.get("/openapi.json", OBSERVER)
def openapi_document():
    from .openapi import document
    return jsonify(document())
