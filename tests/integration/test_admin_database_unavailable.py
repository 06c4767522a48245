"""The admin API while PostgreSQL restarts or fails over: 503 with Retry-After, not an unhandled
500 (the fault suite's PostgreSQL restart met a PoolTimeout on a host's profile list)."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
import psycopg_pool
import pytest

from admin_config.app import DATABASE_RETRY_AFTER_SECONDS, build_services, create_app
from mdmscep_common.health import HealthChecks
from mdmscep_common.settings import load_settings
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber, NoRegistry
from tests.support.recording_publisher import RecordingPublisher


class UnavailableDatabase:
    def __init__(self, error: Exception):
        self._error = error

    @contextmanager
    def transaction(self):
        raise self._error
        yield  # pragma: no cover - a generator for contextmanager


@pytest.mark.parametrize("error", [psycopg_pool.PoolTimeout("couldn't get a connection"),
                                   psycopg.OperationalError("the database system is shutting down")])
@pytest.mark.parametrize("path", ["/api/v1/fleet/hosts",
                                  "/api/v1/fleet/hosts/C02X/configuration_profiles",
                                  "/api/v1/fleet/configuration_profiles"])
def test_the_admin_api_answers_503_while_the_database_is_away(error, path, caplog):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    services = build_services(settings, UnavailableDatabase(error), NoProber(),
                              RecordingPublisher(), host_registry=NoRegistry())
    client = create_app(services, HealthChecks({})).test_client()
    response = client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert response.get_json()["message"] == "The database is unavailable; retry later"
    assert "unhandled error" not in caplog.text
