from __future__ import annotations

import pytest

from admin_config.app import build_services, create_app
from admin_config.scep_gateway import ScepGatewayClient
from mdmscep_common.bus import RecordingPublisher
from mdmscep_common.health import HealthChecks
from mdmscep_common.settings import load_settings
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY


class AdminClient:
    """The admin API through Flask's test client, with the bearer token set."""

    def __init__(self, client, token: str = ADMIN_TOKEN):
        self._client = client
        self.token = token

    def _headers(self, headers):
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, path, headers=None, **kw):
        return self._client.get(path, headers=self._headers(headers), **kw)

    def post(self, path, headers=None, **kw):
        return self._client.post(path, headers=self._headers(headers), **kw)

    def patch(self, path, headers=None, **kw):
        return self._client.patch(path, headers=self._headers(headers), **kw)

    def delete(self, path, headers=None, **kw):
        return self._client.delete(path, headers=self._headers(headers), **kw)

    @property
    def raw(self):
        return self._client


@pytest.fixture
def publisher():
    return RecordingPublisher()


@pytest.fixture
def admin_app(db, scep_gateway, publisher, database_url):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "DATABASE_URL": database_url})
    services = build_services(settings, db, ScepGatewayClient(scep_gateway, 2.0), publisher)
    app = create_app(services, HealthChecks({}))
    app.testing = True
    return app


@pytest.fixture
def admin(admin_app):
    return AdminClient(admin_app.test_client())


def create_ca(admin, name, url, challenge="ch4llenge!"):
    return admin.post("/api/v1/fleet/certificate_authorities",
                      json={"custom_scep_proxy": {"name": name, "url": url,
                                                  "challenge": challenge}})
