"""The admin API's OpenAPI 3.0 document. A test keeps it and the Flask routes in step."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {400: "Bad input", 401: "Missing or invalid bearer token", 404: "Not found",
             409: "Conflict", 413: "Body too large", 422: "Invalid field",
             503: "A dependency is unavailable"}
    return {str(c): _json(_ref("Error"), texts[c]) for c in codes}


_PAGE_PARAMS = [
    {"name": "page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "per_page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
]
_PROFILE_UUID = {"name": "profile_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
_HOST_UUID = {"name": "host_uuid", "in": "path", "required": True, "schema": {"type": "string"}}
_CA_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

_SCHEMAS: dict[str, Any] = {
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
        "type": "object", "required": ["id", "name", "type", "url", "challenge"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "type": {"type": "string", "enum": ["custom_scep_proxy"]},
                       "url": {"type": "string"},
                       "challenge": {"type": "string", "enum": ["********"],
                                     "description": "always masked"}},
    },
    "CustomScepProxyCreate": {
        "type": "object", "required": ["custom_scep_proxy"],
        "properties": {"custom_scep_proxy": {
            "type": "object", "required": ["name", "url", "challenge"],
            "properties": {
                "name": {"type": "string", "maxLength": 255, "pattern": "^[A-Za-z0-9_]+$"},
                "url": {"type": "string", "description": "http(s) SCEP URL; GetCACert must answer"},
                "challenge": {"type": "string", "minLength": 1}}}},
    },
    "CustomScepProxyEdit": {
        "type": "object", "required": ["custom_scep_proxy"],
        "properties": {"custom_scep_proxy": {
            "type": "object",
            "properties": {"url": {"type": "string"}, "challenge": {"type": "string"}}}},
    },
    "Profile": {
        "type": "object", "required": ["profile_uuid", "name", "identifier", "created_at"],
        "properties": {"profile_uuid": {"type": "string"}, "name": {"type": "string"},
                       "identifier": {"type": "string"},
                       "created_at": {"type": "string", "format": "date-time"}},
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
    "Host": {
        "type": "object", "required": ["uuid", "serial_number", "enrolled", "last_seen_at"],
        "properties": {"uuid": {"type": "string", "description": "UDID as the host sent it"},
                       "serial_number": {"type": "string"}, "enrolled": {"type": "boolean"},
                       "last_seen_at": {"type": "string", "format": "date-time", "nullable": True}},
    },
    "Activity": {
        "type": "object", "required": ["id", "type", "actor", "details", "created_at"],
        "properties": {"id": {"type": "integer"}, "type": {"type": "string"},
                       "actor": {"type": "string"}, "details": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"}},
    },
}


_CERTIFICATES = {"type": "object", "required": ["certificates"],
                 "properties": {"certificates": {"type": "array", "items": _ref("Certificate")}}}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "mdmscep admin API", "version": "1.0.0",
                 "description": "Custom SCEP certificate authorities and configuration profiles "
                                "for an Apple MDM (Fleet-compatible shapes)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/fleet/certificate_authorities": {
                "get": {"operationId": "listCertificateAuthorities", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json({"type": "object",
                                                    "required": ["certificate_authorities"],
                                                    "properties": {"certificate_authorities": {
                                                        "type": "array",
                                                        "items": _ref("CertificateAuthoritySummary")}}},
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
            "/api/v1/fleet/activities": {
                "get": {"operationId": "listActivities", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json({"type": "object", "required": ["activities"],
                                                    "properties": {"activities": {
                                                        "type": "array",
                                                        "items": _ref("Activity")}}},
                                                   "Newest first"),
                                      **_errors(400, 401)}},
            },
            "/api/v1/fleet/configuration_profiles": {
                "get": {"operationId": "listConfigurationProfiles", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json({"type": "object", "required": ["profiles"],
                                                    "properties": {"profiles": {
                                                        "type": "array", "items": _ref("Profile")}}},
                                                   "Profiles in upload order"),
                                      **_errors(400, 401)}},
                "post": {"operationId": "uploadConfigurationProfile",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {
                             "schema": {"type": "object", "required": ["profile"],
                                        "properties": {"profile": {"type": "string",
                                                                   "format": "binary"}}}}}},
                         "responses": {"200": _json({"type": "object", "required": ["profile_uuid"],
                                                     "properties": {"profile_uuid": {"type": "string"}}},
                                                    "Stored; delivered to every enrolled host"),
                                       **_errors(400, 401, 413)}},
            },
            "/api/v1/fleet/configuration_profiles/{profile_uuid}": {
                "parameters": [_PROFILE_UUID],
                "delete": {"operationId": "deleteConfigurationProfile",
                           "responses": {"204": {"description": "Deleted; hosts get RemoveProfile"},
                                         **_errors(401, 404)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}/configuration_profiles": {
                "parameters": [_HOST_UUID],
                "get": {"operationId": "listHostConfigurationProfiles",
                        "responses": {"200": _json({"type": "object", "required": ["profiles"],
                                                    "properties": {"profiles": {
                                                        "type": "array",
                                                        "items": _ref("HostProfile")}}},
                                                   "The host's deliveries"),
                                      **_errors(401, 404)}},
            },
            "/api/v1/fleet/hosts/{host_uuid}/certificates": {
                "parameters": [_HOST_UUID],
                "get": {"operationId": "listHostCertificates",
                        "responses": {"200": _json(_CERTIFICATES, "Certificates the host holds for "
                                                                  "delivered SCEP profiles"),
                                      **_errors(401, 404)}},
            },
            "/api/v1/fleet/certificates": {
                "get": {"operationId": "listCertificates",
                        "parameters": [*_PAGE_PARAMS, {
                            "name": "expiring_within_days", "in": "query", "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": 36500}}],
                        "responses": {"200": _json(_CERTIFICATES, "Soonest expiry first"),
                                      **_errors(400, 401)}},
            },
            "/api/v1/fleet/hosts": {
                "get": {"operationId": "listHosts", "parameters": _PAGE_PARAMS,
                        "responses": {"200": _json({"type": "object", "required": ["hosts"],
                                                    "properties": {"hosts": {
                                                        "type": "array", "items": _ref("Host")}}},
                                                   "Hosts in enrollment order"),
                                      **_errors(400, 401)}},
            },
            "/api/v1/fleet/openapi.json": {
                "get": {"operationId": "openapiDocument",
                        "responses": {"200": _json({"type": "object"}, "This document"),
                                      **_errors(401)}},
            },
        },
    }
