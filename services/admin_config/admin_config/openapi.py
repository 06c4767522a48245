"""The admin API's OpenAPI 3.0 document. A test keeps it and the Flask routes in step; each
operation's role (`x-required-role`, and its 403) comes from the routes' own declarations."""

from __future__ import annotations

import re
from typing import Any

from .api import routes
from .roles import DEFAULT_ROLE, OBSERVER, ROLES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key, "meta"],
            "properties": {key: {"type": "array", "items": item}, "meta": _ref("ListMeta")}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {400: "Bad input", 401: "Missing, invalid or revoked bearer token",
             403: "The token's role is below the one this call needs (named in the message); "
                  "nothing was changed",
             404: "Not found", 409: "Conflict", 413: "Body over 2 MiB", 422: "Invalid field",
             429: "Too many failed authentication attempts from this client address",
             503: "A service this call needs is unavailable; try again shortly"}
    answers = {str(c): _json(_ref("Error"), texts[c]) for c in codes}
    if 429 in codes:
        answers["429"]["headers"] = {"Retry-After": {
            "description": "seconds until one more attempt is allowed",
            "schema": {"type": "integer", "minimum": 1}}}
    return answers


_PAGE_PARAMS = [
    {"name": "page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "per_page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
]
_PROFILE_UUID = {"name": "profile_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
_HOST_UUID = {"name": "host_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
_CA_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

_LIMITS = {
    "max_concurrent_requests": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 4,
                                "description": "PKIOperations in flight at this CA, fleet-wide"},
    "max_issuance_per_second": {"type": "number", "minimum": 0.01, "maximum": 10000,
                                "nullable": True,
                                "description": "ceiling of the pace of deliveries to this CA, "
                                               "which is learned from its answers (starting "
                                               "here, else at 5 per allowed concurrent "
                                               "request)"},
}

_HOST_FACTS = {"product_name": {"type": "string",
                                "description": "hardware model identifier (DeviceInformation)"},
               "platform": {"type": "string", "enum": ["darwin", "ios", "ipados", ""],
                            "description": "from the product name; empty when unknown"}}
_ACTIVITY_TYPES = ("added_/edited_/deleted_custom_scep_proxy, created_/edited_/"
                   "deleted_configuration_profile, resent_/retried_configuration_profile, "
                   "deleted_host, created_/deleted_team, transferred_hosts, created_/edited_/"
                   "deleted_label, created_/revoked_api_token, renewed_certificates, "
                   "credential_expiring")
_LABEL_FIELDS = ("labels_include_all", "labels_include_any", "labels_exclude_any")
_CRITERIA = {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "description": "every key given must hold (docs/api.md \"Label criteria\")",
    "properties": {
        "serial_number_prefix": {"type": "string", "maxLength": 255},
        "model": {"type": "string", "maxLength": 255},
        "product_name": {"type": "string", "maxLength": 255},
        "platform": {"type": "string", "enum": ["darwin", "ios", "ipados"]},
        "os_version_at_least": {"type": "string", "pattern": r"^\d{1,6}(\.\d{1,6}){0,3}$"},
        "os_version_below": {"type": "string", "pattern": r"^\d{1,6}(\.\d{1,6}){0,3}$"}}}
_TEAM_ID = {"type": "integer", "nullable": True, "description": "null: no team"}

_SCHEMAS: dict[str, Any] = {
    "Role": {"type": "string", "enum": list(ROLES),
             "description": "observer: every read; maintainer: also profiles (upload, replace, "
                            "delete, resend, retry) and labels; admin: everything (CAs, API "
                            "tokens, teams, host transfer and deletion too)"},
    "Team": {
        "type": "object", "required": ["id", "name"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "host_count": {"type": "integer"}},
    },
    "Label": {
        "type": "object",
        "required": ["id", "name", "label_membership_type", "criteria", "hosts"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "label_membership_type": {"type": "string",
                                                 "enum": ["manual", "dynamic"]},
                       "criteria": {**_CRITERIA, "nullable": True,
                                    "description": "a dynamic label's; null for a manual one"},
                       "hosts": {"type": "array", "items": {"type": "string"},
                                 "description": "a manual label's host UUIDs (empty for a "
                                                "dynamic one: the processor evaluates it)"}},
    },
    "Error": {
        "type": "object", "required": ["message", "errors"],
        "properties": {
            "message": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["name", "reason"],
                "properties": {"name": {"type": "string"}, "reason": {"type": "string"}}}},
        },
    },
    "CertificateAuthoritySummary": {
        "type": "object", "required": ["id", "name", "type"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "type": {"type": "string", "enum": ["custom_scep_proxy"]}},
    },
    "CertificateAuthority": {
        "type": "object", "required": ["id", "name", "type", "url", "challenge",
                                       "max_concurrent_requests", "max_issuance_per_second"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "type": {"type": "string", "enum": ["custom_scep_proxy"]},
                       "url": {"type": "string"},
                       "challenge": {"type": "string", "enum": ["********"],
                                     "description": "always masked"},
                       **_LIMITS},
    },
    "CertificateAuthorityStats": {
        "type": "object",
        "required": ["id", "name", "window_seconds", "issued", "failed", "refused_busy",
                     "in_flight", "waiting", "average_latency_ms", "max_concurrent_requests"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "window_seconds": {"type": "integer"}, "issued": {"type": "integer"},
                       "failed": {"type": "integer"}, "refused_busy": {"type": "integer"},
                       "in_flight": {"type": "integer"}, "waiting": {"type": "integer"},
                       "average_latency_ms": {"type": "number", "nullable": True},
                       "max_concurrent_requests": {"type": "integer"},
                       "issuance_rate": {
                           "type": "object", "nullable": True,
                           "description": "how fast the processor sends this CA's SCEP "
                                          "deliveries, learned from its answers (null while the "
                                          "processor does not know the CA yet)",
                           "required": ["per_second", "ceiling", "reason", "changed_at"],
                           "properties": {
                               "per_second": {"type": "number"},
                               "ceiling": {"type": "number", "nullable": True,
                                           "description": "max_issuance_per_second"},
                               "reason": {"type": "string", "enum": [
                                   "start", "fast_answers", "slow_answer", "scep_failure",
                                   "server_error", "timeout", "unreachable"]},
                               "changed_at": {"type": "string", "format": "date-time",
                                              "nullable": True}}}},
    },
    "CustomScepProxyCreate": {
        "type": "object", "required": ["custom_scep_proxy"],
        "properties": {"custom_scep_proxy": {
            "type": "object", "required": ["name", "url", "challenge"],
            "properties": {
                "name": {"type": "string", "maxLength": 255, "pattern": "^[A-Za-z0-9_]+$"},
                "url": {"type": "string", "description": "http(s) SCEP URL; GetCACert must answer"},
                "challenge": {"type": "string", "minLength": 1}, **_LIMITS}}},
    },
    "CustomScepProxyEdit": {
        "type": "object", "required": ["custom_scep_proxy"],
        "properties": {"custom_scep_proxy": {
            "type": "object",
            "description": "only the fields to change; a changed url or challenge re-sends every "
                           "profile using the CA",
            "properties": {
                "name": {"type": "string", "description": "if sent, the CA's own name (a rename "
                                                          "is a 422)"},
                "url": {"type": "string", "nullable": True,
                        "description": "a new url needs the challenge too; GetCACert must answer"},
                "challenge": {"type": "string", "nullable": True},
                **_LIMITS}}},
    },
    "Profile": {
        "type": "object", "required": ["profile_uuid", "name", "identifier", "created_at",
                                       "team_id", *_LABEL_FIELDS],
        "properties": {"profile_uuid": {"type": "string"}, "name": {"type": "string"},
                       "identifier": {"type": "string"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "team_id": _TEAM_ID,
                       **{f: {"type": "array", "items": {"type": "string"},
                              "description": "label names"} for f in _LABEL_FIELDS}},
    },
    "HostProfile": {
        "type": "object",
        "required": ["profile_uuid", "name", "identifier", "operation_type", "status", "detail"],
        "properties": {"profile_uuid": {"type": "string"}, "name": {"type": "string"},
                       "identifier": {"type": "string"},
                       "operation_type": {"type": "string", "enum": ["install", "remove"]},
                       "status": {"type": "string",
                                  "enum": ["pending", "verifying", "verified", "failed"]},
                       "detail": {"type": "string"}},
    },
    "Certificate": {
        "type": "object",
        "required": ["host_uuid", "profile_uuid", "profile_name", "serial", "subject", "issuer",
                     "not_before", "not_after"],
        "properties": {"host_uuid": {"type": "string"}, "profile_uuid": {"type": "string"},
                       "profile_name": {"type": "string"},
                       "serial": {"type": "string", "description": "hexadecimal"},
                       "subject": {"type": "string"}, "issuer": {"type": "string"},
                       "not_before": {"type": "string", "format": "date-time"},
                       "not_after": {"type": "string", "format": "date-time"}},
    },
    "ListMeta": {
        "type": "object", "required": ["total", "page", "per_page"],
        "properties": {"total": {"type": "integer"}, "page": {"type": "integer"},
                       "per_page": {"type": "integer"}},
    },
    "ProfileSummary": {
        "type": "object",
        "required": ["profile_uuid", "pending", "verifying", "verified", "failed", "total"],
        "properties": {"profile_uuid": {"type": "string"}, "pending": {"type": "integer"},
                       "verifying": {"type": "integer"}, "verified": {"type": "integer"},
                       "failed": {"type": "integer"}, "total": {"type": "integer"}},
    },
    "ProfileHost": {
        "type": "object",
        "required": ["host_uuid", "serial_number", "operation_type", "status", "detail",
                     "updated_at"],
        "properties": {"host_uuid": {"type": "string"}, "serial_number": {"type": "string"},
                       "operation_type": {"type": "string", "enum": ["install", "remove"]},
                       "status": {"type": "string",
                                  "enum": ["pending", "verifying", "verified", "failed"]},
                       "detail": {"type": "string"},
                       "updated_at": {"type": "string", "format": "date-time"}},
    },
    "HostDetail": {
        "type": "object",
        "required": ["uuid", "serial_number", "enrolled", "last_seen_at", "team_id",
                     "device_name", "model", "os_version", "product_name", "platform",
                     "enrolled_at", "push_token_invalid", "facts_updated_at", "profiles"],
        "properties": {"uuid": {"type": "string"}, "serial_number": {"type": "string"},
                       "enrolled": {"type": "boolean"}, "team_id": _TEAM_ID,
                       "last_seen_at": {"type": "string", "format": "date-time", "nullable": True},
                       "device_name": {"type": "string"}, "model": {"type": "string"},
                       "os_version": {"type": "string"}, **_HOST_FACTS,
                       "enrolled_at": {"type": "string", "format": "date-time", "nullable": True},
                       "push_token_invalid": {"type": "boolean"},
                       "facts_updated_at": {"type": "string", "format": "date-time",
                                            "nullable": True,
                                            "description": "when the host last answered "
                                                           "DeviceInformation"},
                       "profiles": {"type": "object", "description": "deliveries per status",
                                    "required": ["pending", "verifying", "verified", "failed"],
                                    "properties": {s: {"type": "integer"} for s in (
                                        "pending", "verifying", "verified", "failed")}}},
    },
    "ApiToken": {
        "type": "object", "required": ["name", "role", "created_at", "last_used_at", "revoked_at"],
        "properties": {"name": {"type": "string"}, "role": _ref("Role"),
                       "created_at": {"type": "string", "format": "date-time"},
                       "last_used_at": {"type": "string", "format": "date-time", "nullable": True},
                       "revoked_at": {"type": "string", "format": "date-time", "nullable": True}},
    },
    "Host": {
        "type": "object", "required": ["uuid", "serial_number", "enrolled", "last_seen_at",
                                       "team_id"],
        "properties": {"uuid": {"type": "string", "description": "UDID as the host sent it"},
                       "serial_number": {"type": "string"}, "enrolled": {"type": "boolean"},
                       "last_seen_at": {"type": "string", "format": "date-time", "nullable": True},
                       "team_id": _TEAM_ID},
    },
    "Activity": {
        "type": "object", "required": ["id", "type", "actor", "details", "created_at"],
        "properties": {"id": {"type": "integer"},
                       "type": {"type": "string", "description": _ACTIVITY_TYPES},
                       "actor": {"type": "string"}, "details": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"}},
    },
}


_HOST_CERTIFICATES = {"type": "object", "required": ["certificates"],
                      "properties": {"certificates": {"type": "array",
                                                      "items": _ref("Certificate")}}}
_MULTIPART_PROFILE = {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["profile"],
               "properties": {"profile": {"type": "string", "format": "binary"}}}}}}
_MULTIPART_SCOPED_PROFILE = {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["profile"],
               "properties": {
                   "profile": {"type": "string", "format": "binary"},
                   "team_id": {"type": "integer", "minimum": 0,
                               "description": "the team whose hosts get it; absent or 0: hosts "
                                              "in no team"},
                   **{f: {"type": "array", "items": {"type": "string"},
                          "description": "label names (the field repeated); at most one of "
                                         "labels_include_all and labels_include_any"}
                      for f in _LABEL_FIELDS}}},
    "encoding": {f: {"style": "form", "explode": True} for f in _LABEL_FIELDS}}}}
_TEAM_FILTER = {"name": "team_id", "in": "query", "required": False,
                "description": "only this team's (0: of no team)",
                "schema": {"type": "integer", "minimum": 0}}
_TEAM_PATH = {"name": "team_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_LABEL_PATH = {"name": "label_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_STATUS = {"name": "status", "in": "query", "required": False,
           "schema": {"type": "string", "enum": ["pending", "verifying", "verified", "failed"]}}


def _query(name: str, description: str = "", max_length: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if max_length is not None:
        schema["maxLength"] = max_length
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_SUMMARIES = {
    "listCertificateAuthorities": "List custom SCEP certificate authorities",
    "createCertificateAuthority": "Add a CA (validated, then probed with GetCACaps/GetCACert)",
    "getCertificateAuthority": "A CA (its challenge always masked)",
    "editCertificateAuthority": "Change a CA's url, challenge or limits",
    "deleteCertificateAuthority": "Delete a CA no profile uses",
    "certificateAuthorityStats": "The last hour of SCEP traffic at a CA",
    "listActivities": "The activity feed (audit log), newest first",
    "listConfigurationProfiles": "List configuration profiles",
    "uploadConfigurationProfile": "Upload a profile (multipart field `profile`)",
    "getConfigurationProfile": "A profile, or with alt=media its bytes as uploaded",
    "replaceConfigurationProfile": "Replace a profile's content in place",
    "deleteConfigurationProfile": "Delete a profile; hosts that have it get RemoveProfile",
    "configurationProfileSummary": "A profile's hosts per delivery status",
    "configurationProfileHosts": "A profile's deliveries, host by host",
    "retryFailedHosts": "A fresh delivery for every failed host of a profile",
    "resendConfigurationProfile": "A fresh delivery of a profile to one host",
    "listHosts": "List hosts (by a delivery's status or profile too)",
    "getHost": "A host, with its deliveries counted per status",
    "deleteHost": "Forget a host",
    "listHostConfigurationProfiles": "A host's deliveries",
    "listHostCertificates": "Certificates a host holds for delivered SCEP profiles",
    "listCertificates": "Certificates hosts hold, soonest expiry first",
    "listTeams": "List teams",
    "createTeam": "Create a team",
    "deleteTeam": "Delete a team: its profiles are deleted, its hosts go to no team",
    "transferHosts": "Move hosts to a team, or to no team",
    "listLabels": "List labels",
    "createLabel": "Create a manual (hosts) or dynamic (criteria) label",
    "editLabel": "Replace a manual label's hosts, or rename a label",
    "deleteLabel": "Delete a label no profile names",
    "listApiTokens": "List API tokens (never their values)",
    "createApiToken": "Create an API token (shown once)",
    "revokeApiToken": "Revoke an API token",
    "openapiDocument": "This document",
}


_FLASK_PARAMS = {"ca_id": "id"}  # Flask's names of path parameters → the document's


def _roles_by_operation() -> dict[tuple[str, str], str]:
    """(path as the document writes it, method) → the role the route declares (api.py)."""
    def path(rule: str) -> str:
        return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>",
                      lambda m: "{" + _FLASK_PARAMS.get(m.group(1), m.group(1)) + "}", rule)
    return {(path(rule), method.lower()): role for (method, rule), role in routes.operations.items()}


def document() -> dict[str, Any]:
    doc = _document()
    roles = _roles_by_operation()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                operation.setdefault("summary", _SUMMARIES[operation["operationId"]])
                role = roles[(path, method)]
                operation["x-required-role"] = role
                if role != OBSERVER:  # every valid token is at least an observer
                    operation["responses"]["403"] = _errors(403)["403"]
                # Every route checks the bearer token first: too many failures from a client
                # get 429; and a NUL character in any path or query parameter is a 400
                # (api.py `authenticate`: PostgreSQL text cannot hold it).
                operation["responses"].setdefault("429", _errors(429)["429"])
                operation["responses"].setdefault("400", _errors(400)["400"])
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "mdmscep admin API", "version": "1.0.0",
                 "description": "Custom SCEP certificate authorities and configuration profiles "
                                "for an Apple MDM (Fleet-compatible shapes). Every route needs "
                                "`Authorization: Bearer <token>`. Errors are "
                                "`{\"message\", \"errors\": [{\"name\", \"reason\"}]}` with a 4xx "
                                "status. Lists take `page` (from 0) and `per_page` (1-1000, "
                                "default 100) and answer `meta`. Bodies over 2 MiB get 413. "
                                "Each token has a role (`observer`, `maintainer` or `admin`; "
                                "the bootstrap ADMIN_API_TOKEN is admin): `x-required-role` "
                                "names the one each operation needs, and a call beyond the "
                                "token's role is a 403 naming it that changes nothing. "
                                "Reference: docs/api.md."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/fleet/certificate_authorities": {
                "get": {"operationId": "listCertificateAuthorities", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json(_list("certificate_authorities",
                                                         _ref("CertificateAuthoritySummary")),
                                                   "Certificate authorities"),
                                      **_errors(400, 401)}},
                "post": {"operationId": "createCertificateAuthority",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": _ref("CustomScepProxyCreate")}}},
                         "responses": {"200": _json(_ref("CertificateAuthoritySummary"), "Created"),
                                       **_errors(400, 401, 409, 413, 422, 503)}},
            },
            "/api/v1/fleet/certificate_authorities/{id}": {
                "parameters": [_CA_ID],
                "get": {"operationId": "getCertificateAuthority",
                        "responses": {"200": _json(_ref("CertificateAuthority"), "The CA"),
                                      **_errors(401, 404)}},
                "patch": {"operationId": "editCertificateAuthority",
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": _ref("CustomScepProxyEdit")}}},
                          "responses": {"200": _json(_ref("CertificateAuthority"), "Edited"),
                                        **_errors(400, 401, 404, 413, 422, 503)}},
                "delete": {"operationId": "deleteCertificateAuthority",
                           "responses": {"204": {"description": "Deleted"},
                                         **_errors(401, 404, 409)}},
            },
            "/api/v1/fleet/certificate_authorities/{id}/stats": {
                "parameters": [_CA_ID],
                "get": {"operationId": "certificateAuthorityStats",
                        "responses": {"200": _json(_ref("CertificateAuthorityStats"),
                                                   "The last hour at this CA"),
                                      **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/activities": {
                "get": {"operationId": "listActivities",
                        "parameters": [*_PAGE_PARAMS, _query("type"), _query("actor")],
                        "responses": {"200": _json(_list("activities", _ref("Activity")),
                                                   "Newest first"),
                                      **_errors(400, 401)}},
            },
            "/api/v1/fleet/configuration_profiles": {
                "get": {"operationId": "listConfigurationProfiles",
                        "parameters": [*_PAGE_PARAMS, _TEAM_FILTER],
                        "responses": {"200": _json(_list("profiles", _ref("Profile")),
                                                   "Profiles in upload order"),
                                      **_errors(400, 401)}},
                "post": {"operationId": "uploadConfigurationProfile",
                         "requestBody": _MULTIPART_SCOPED_PROFILE,
                         "responses": {"200": _json({"type": "object", "required": ["profile_uuid"],
                                                     "properties": {"profile_uuid": {"type": "string"}}},
                                                    "Stored; delivered to every enrolled host of "
                                                    "its team that its label rule admits"),
                                       **_errors(400, 401, 413)}},
            },
            "/api/v1/fleet/configuration_profiles/{profile_uuid}": {
                "parameters": [_PROFILE_UUID],
                "get": {"operationId": "getConfigurationProfile",
                        "parameters": [{"name": "alt", "in": "query", "required": False,
                                        "description": "`media`: the profile's bytes as "
                                                       "uploaded (variables unrendered)",
                                        "schema": {"type": "string", "enum": ["media"]}}],
                        "responses": {"200": {"description": "The profile; its bytes with "
                                                             "alt=media",
                                              "content": {
                                                  "application/json": {"schema": _ref("Profile")},
                                                  "application/x-apple-aspen-config": {
                                                      "schema": {"type": "string",
                                                                 "format": "binary"}}}},
                                      **_errors(400, 401, 404)}},
                "put": {"operationId": "replaceConfigurationProfile",
                        "description": "New content with the same PayloadIdentifier; hosts get it "
                                       "as InstallProfile without a RemoveProfile first",
                        "requestBody": _MULTIPART_PROFILE,
                        "responses": {"200": _json(_ref("Profile"), "Replaced"),
                                      **_errors(400, 401, 404, 413)}},
                "delete": {"operationId": "deleteConfigurationProfile",
                           "responses": {"204": {"description": "Deleted; hosts get RemoveProfile"},
                                         **_errors(401, 404)}},
            },
            "/api/v1/fleet/configuration_profiles/{profile_uuid}/summary": {
                "parameters": [_PROFILE_UUID],
                "get": {"operationId": "configurationProfileSummary",
                        "responses": {"200": _json(_ref("ProfileSummary"), "Hosts per status"),
                                      **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/configuration_profiles/{profile_uuid}/hosts": {
                "parameters": [_PROFILE_UUID],
                "get": {"operationId": "configurationProfileHosts",
                        "parameters": [*_PAGE_PARAMS, _STATUS],
                        "responses": {"200": _json(_list("hosts", _ref("ProfileHost")),
                                                   "The profile's deliveries with their details"),
                                      **_errors(400, 401, 404, 503)}},
            },
            "/api/v1/fleet/configuration_profiles/{profile_uuid}/retry_failed": {
                "parameters": [_PROFILE_UUID],
                "post": {"operationId": "retryFailedHosts",
                         "responses": {"202": _json({"type": "object", "required": ["hosts"],
                                                     "properties": {"hosts": {"type": "integer"}}},
                                                    "Every failed host gets a fresh delivery"),
                                       **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}/configuration_profiles/{profile_uuid}/resend": {
                "parameters": [_HOST_UUID, _PROFILE_UUID],
                "post": {"operationId": "resendConfigurationProfile",
                         "responses": {"202": _json({"type": "object"}, "A fresh delivery"),
                                       **_errors(401, 404, 409, 503)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}": {
                "parameters": [_HOST_UUID],
                "get": {"operationId": "getHost",
                        "responses": {"200": _json(_ref("HostDetail"), "The host"),
                                      **_errors(401, 404, 503)}},
                "delete": {"operationId": "deleteHost",
                           "description": "Forget the host (nothing is sent to it); it can enroll "
                                          "again",
                           "responses": {"204": {"description": "Deleted"},
                                         **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/api_tokens": {
                "get": {"operationId": "listApiTokens",
                        "responses": {"200": _json({"type": "object", "required": ["api_tokens"],
                                                    "properties": {"api_tokens": {
                                                        "type": "array", "items": _ref("ApiToken")}}},
                                                   "Tokens (never their values)"),
                                      **_errors(401)}},
                "post": {"operationId": "createApiToken",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string",
                                                                "pattern": "^[A-Za-z0-9_.@-]{1,100}$"},
                                                       "role": {"type": "string",
                                                                "enum": list(ROLES),
                                                                "default": DEFAULT_ROLE}}}}}},
                         "responses": {"200": _json({"type": "object",
                                                     "required": ["name", "role", "token"],
                                                     "properties": {"name": {"type": "string"},
                                                                    "role": _ref("Role"),
                                                                    "token": {"type": "string"}}},
                                                    "The token, shown this once"),
                                       **_errors(401, 409, 413, 422)}},
            },
            "/api/v1/fleet/api_tokens/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "delete": {"operationId": "revokeApiToken",
                           "responses": {"204": {"description": "Revoked"}, **_errors(401, 404)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}/configuration_profiles": {
                "parameters": [_HOST_UUID],
                "get": {"operationId": "listHostConfigurationProfiles",
                        "responses": {"200": _json({"type": "object", "required": ["profiles"],
                                                    "properties": {"profiles": {
                                                        "type": "array",
                                                        "items": _ref("HostProfile")}}},
                                                   "The host's deliveries"),
                                      **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}/certificates": {
                "parameters": [_HOST_UUID],
                "get": {"operationId": "listHostCertificates",
                        "responses": {"200": _json(_HOST_CERTIFICATES,
                                                   "Certificates the host holds for delivered SCEP "
                                                   "profiles, soonest expiry first"),
                                      **_errors(401, 404, 503)}},
            },
            "/api/v1/fleet/certificates": {
                "get": {"operationId": "listCertificates",
                        "parameters": [*_PAGE_PARAMS, {
                            "name": "expiring_within_days", "in": "query", "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": 36500}}],
                        "responses": {"200": _json(_list("certificates", _ref("Certificate")),
                                                   "Soonest expiry first"),
                                      **_errors(400, 401, 503)}},
            },
            "/api/v1/fleet/hosts": {
                "get": {"operationId": "listHosts",
                        "parameters": [*_PAGE_PARAMS, _STATUS, _query("profile_uuid"), _TEAM_FILTER,
                                       _query("query", "part of the serial number or UUID, any case",
                                              max_length=100),
                                       *[_query(name, f"hosts whose {name} is exactly this",
                                                max_length=255)
                                         for name in ("model", "os_version", "product_name")],
                                       {"name": "platform", "in": "query", "required": False,
                                        "schema": {"type": "string",
                                                   "enum": ["darwin", "ios", "ipados"]}}],
                        "responses": {"200": _json(_list("hosts", _ref("Host")),
                                                   "Hosts in enrollment order, or in host UUID "
                                                   "order when status or profile_uuid is given"),
                                      **_errors(400, 401, 503)}},
            },
            "/api/v1/fleet/hosts/transfer": {
                "post": {"operationId": "transferHosts",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "required": ["team_id", "hosts"],
                                        "properties": {
                                            "team_id": {"type": "integer", "nullable": True,
                                                        "description": "null (or 0): no team"},
                                            "hosts": {"type": "array", "minItems": 1,
                                                      "items": {"type": "string"},
                                                      "description": "host UUIDs; every one "
                                                                     "must exist"}}}}}},
                         "responses": {"200": _json({"type": "object",
                                                     "required": ["hosts", "moved"],
                                                     "properties": {
                                                         "hosts": {"type": "integer"},
                                                         "moved": {"type": "integer",
                                                                   "description": "hosts whose "
                                                                   "team changed"}}},
                                                    "Moved (all or none)"),
                                       **_errors(400, 401, 413, 503)}},
            },
            "/api/v1/fleet/teams": {
                "get": {"operationId": "listTeams", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json(_list("teams", _ref("Team")), "Teams by id"),
                                      **_errors(400, 401)}},
                "post": {"operationId": "createTeam",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string",
                                                                "maxLength": 255}}}}}},
                         "responses": {"200": _json({"type": "object", "required": ["team"],
                                                     "properties": {"team": _ref("Team")}},
                                                    "Created"),
                                       **_errors(400, 401, 409, 413)}},
            },
            "/api/v1/fleet/teams/{team_id}": {
                "parameters": [_TEAM_PATH],
                "delete": {"operationId": "deleteTeam",
                           "responses": {"204": {"description": "Deleted, with its profiles "
                                                                "(hosts get RemoveProfile); its "
                                                                "hosts are in no team"},
                                         **_errors(401, 404)}},
            },
            "/api/v1/fleet/labels": {
                "get": {"operationId": "listLabels", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json(_list("labels", _ref("Label")), "Labels by id"),
                                      **_errors(400, 401)}},
                "post": {"operationId": "createLabel",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"type": "object", "required": ["name"],
                                        "description": "hosts (manual) or criteria (dynamic), "
                                                       "not both",
                                        "properties": {
                                            "name": {"type": "string", "maxLength": 255},
                                            "hosts": {"type": "array",
                                                      "items": {"type": "string"}},
                                            "criteria": _CRITERIA}}}}},
                         "responses": {"200": _json({"type": "object", "required": ["label"],
                                                     "properties": {"label": _ref("Label")}},
                                                    "Created"),
                                       **_errors(400, 401, 409, 413, 503)}},
            },
            "/api/v1/fleet/labels/{label_id}": {
                "parameters": [_LABEL_PATH],
                "patch": {"operationId": "editLabel",
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"type": "object",
                                         "properties": {
                                             "hosts": {"type": "array",
                                                       "items": {"type": "string"},
                                                       "description": "a manual label's new "
                                                                      "hosts (all of them)"},
                                             "name": {"type": "string", "maxLength": 255}}}}}},
                          "responses": {"200": _json({"type": "object", "required": ["label"],
                                                      "properties": {"label": _ref("Label")}},
                                                     "Edited"),
                                        **_errors(400, 401, 404, 409, 413, 503)}},
                "delete": {"operationId": "deleteLabel",
                           "responses": {"204": {"description": "Deleted"},
                                         **_errors(401, 404, 409)}},
            },
            "/api/v1/fleet/openapi.json": {
                "get": {"operationId": "openapiDocument",
                        "responses": {"200": _json({"type": "object"}, "This document"),
                                      **_errors(401)}},
            },
        },
    }
