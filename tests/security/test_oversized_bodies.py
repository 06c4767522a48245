"""Oversized bodies get 413 everywhere a body is read: the admin API (2 MiB), the MDM endpoint
(8 MiB) and the SCEP proxy's PKIOperation (2 MiB), with Content-Length and chunked, on a real
socket (Werkzeug's threaded server, which passes chunked bodies on like gunicorn). The same
checks run against the services under gunicorn at the end of tests/faults."""

from __future__ import annotations

import types

import pytest
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from admin_config.app import build_services, create_app
from mdm_endpoint import views
from mdm_endpoint.app import MAX_BODY_BYTES as MDM_LIMIT
from mdm_endpoint.identity import IdentityVerifier
from mdmscep_common.health import HealthChecks
from scep_proxy.scep_protocol import MAX_MESSAGE_BYTES
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support import raw_http
from tests.support.admin_doubles import NoProber
from tests.support.identity_pki import IdentityCa
from tests.support.owner_doubles import row_owners
from tests.support.proxy_world import ProxyWorld
from tests.support.recording_publisher import RecordingPublisher
from tests.support.serving import serve_in_thread
from tests.support.settings import load_settings

ADMIN_LIMIT = 2 << 20
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


class Served:
    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
        serve_in_thread(self._server)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def _chunks(body: bytes, size: int = 65536):
    return (body[i:i + size] for i in range(0, len(body), size))


def _both(url, method, limit, headers):
    body = b"0" * (limit + 1)
    return (raw_http.send(url, method, body, headers).status,
            raw_http.send(url, method, _chunks(body), headers, chunked=True).status)


@pytest.fixture
def admin(db):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    services = build_services(settings, db, NoProber(), RecordingPublisher(), **row_owners(db))
    served = Served(create_app(services, HealthChecks({})))
    yield served
    served.close()


def test_the_admin_api_refuses_oversized_uploads(admin):
    url = admin.url + "/api/v1/fleet/configuration_profiles"
    assert _both(url, "POST", ADMIN_LIMIT,
                 {**AUTH, "Content-Type": "multipart/form-data; boundary=x"}) == (413, 413)


def test_the_admin_api_refuses_oversized_json_with_a_length(admin):
    for path, method in (("/certificate_authorities", "POST"), ("/certificate_authorities/1", "PATCH")):
        body = b"0" * (ADMIN_LIMIT + 1)
        headers = {**AUTH, "Content-Type": "application/json"}
        assert raw_http.send(admin.url + "/api/v1/fleet" + path, method, body, headers).status == 413


# Werkzeug cuts a chunked body at MAX_CONTENT_LENGTH without an error: truncated JSON used to
# get 400 "must be a JSON object" instead of 413.
@pytest.mark.parametrize("path", ["/certificate_authorities", "/api_tokens"])
def test_the_admin_api_refuses_oversized_chunked_json(admin, path):
    body = b'{"custom_scep_proxy": {"name": "' + b"a" * (ADMIN_LIMIT + 1) + b'"}}'
    headers = {**AUTH, "Content-Type": "application/json"}
    assert raw_http.send(admin.url + "/api/v1/fleet" + path, "POST",
                         _chunks(body), headers, chunked=True).status == 413


@pytest.mark.parametrize("path", ["/certificate_authorities", "/api_tokens"])
def test_json_nested_too_deep_to_parse_is_a_400(admin, path):
    body = b"[" * 100_000 + b"]" * 100_000  # within the size limit; Python's parser gives up
    headers = {**AUTH, "Content-Type": "application/json"}
    response = raw_http.send(admin.url + "/api/v1/fleet" + path, "POST", body, headers)
    assert response.status in (400, 422), response.status


def test_unauthenticated_oversized_requests_are_refused_unread(admin):
    assert raw_http.send(admin.url + "/api/v1/fleet/certificate_authorities", "POST",
                         b"0" * (ADMIN_LIMIT + 1), {"Content-Type": "application/json"}).status == 401


@pytest.fixture
def mdm():
    ca = IdentityCa()
    app = Flask("mdm-413")
    app.config["MAX_CONTENT_LENGTH"] = MDM_LIMIT
    app.extensions["mdm_endpoint"] = types.SimpleNamespace(
        verifier=IdentityVerifier([ca.certificate]),
        service=types.SimpleNamespace(checkin=lambda *a: None, connect=lambda *a: None))
    app.register_blueprint(views.mdm)
    served = Served(app)
    yield served, ca.issue("host")
    served.close()


@pytest.mark.parametrize("path", ["/mdm/checkin", "/mdm/connect"])
def test_the_mdm_endpoint_refuses_oversized_messages(mdm, path):
    served, identity = mdm
    headers = {"Mdm-Signature": identity.sign(b"x")}
    assert _both(served.url + path, "PUT", MDM_LIMIT, headers) == (413, 413)


def test_a_chunked_mdm_message_under_the_limit_is_read_whole(mdm):
    served, identity = mdm
    body = b"<plist>" + b" " * 100_000 + b"</plist>"
    answer = raw_http.send(served.url + "/mdm/connect", "PUT", _chunks(body, 4096),
                           {"Mdm-Signature": identity.sign(body)}, chunked=True)
    assert answer.status == 200


@pytest.fixture
def proxy():
    world = ProxyWorld()
    served = Served(world.app)
    yield world, served
    served.close()
    world.close()


def test_the_proxy_refuses_oversized_pki_messages(proxy):
    world, served = proxy
    host, profile, code = world.grant()
    url = served.url + world.path(host, profile, code) + "?operation=PKIOperation"
    assert _both(url, "POST", MAX_MESSAGE_BYTES, {}) == (413, 413)
    assert not world.fake.code_used(code) and world.fake.calls_for(code) == []
    too_long = "A" * (MAX_MESSAGE_BYTES * 4 // 3 + 8192)
    answer = world.client.get(world.path(host, profile, code),
                              query_string={"operation": "PKIOperation", "message": too_long})
    assert answer.status_code == 413
