"""The admin API while PostgreSQL restarts or fails over: 503 with Retry-After, not an unhandled
500 (the fault suite's PostgreSQL restart met a PoolTimeout on a host's profile list). What
admin-config only asks other services for (the host list) still answers."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import psycopg_pool
import pytest

from admin_config.app import DATABASE_RETRY_AFTER_SECONDS, build_services, create_app
from admin_config.delivery_directory_client import Delivery
from admin_config.host_registry_client import RegisteredHost
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings


class UnavailableDatabase:
    def __init__(self, error: Exception):
        self._error = error

    @contextmanager
    def transaction(self):
        raise self._error
        yield  # pragma: no cover - a generator for contextmanager


HOST = RegisteredHost("C02X", "C02SERIAL", True, None, "", "", "", None, False)


class OneHost:
    """mdm-endpoint's HostRegistry, up, knowing one host."""

    def get_hosts(self, host_uuids):
        return {u: HOST for u in host_uuids if u == HOST.uuid}

    def list_hosts(self, page, per_page, query="", host_uuids=None, facts=None):
        return [HOST], 1


class OneDelivery:
    """The processor's DeliveryDirectory, up: the host has one delivery (whose profile's current
    name admin-config looks up in its own table)."""

    def deliveries_of_host(self, host_uuid, status=""):
        return [Delivery(host_uuid, "P-1", "Wi-Fi", "com.example.wifi", "install", "pending", "",
                         datetime.now(UTC))]


def _admin(error: Exception):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    services = build_services(settings, UnavailableDatabase(error), NoProber(),
                              RecordingPublisher(), host_registry=OneHost(),
                              deliveries=OneDelivery(), ca_requests=object())
    return create_app(services, HealthChecks({})).test_client()


ERRORS = [psycopg_pool.PoolTimeout("couldn't get a connection"),
          psycopg.OperationalError("the database system is shutting down")]


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("path", ["/api/v1/fleet/activities",
                                  "/api/v1/fleet/hosts/C02X/configuration_profiles",
                                  "/api/v1/fleet/configuration_profiles"])
def test_the_admin_api_answers_503_while_the_database_is_away(error, path, caplog):
    response = _admin(error).get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert response.get_json()["message"] == "The database is unavailable; retry later"
    assert "unhandled error" not in caplog.text


@pytest.mark.parametrize("error", ERRORS)
def test_the_host_list_needs_only_mdm_endpoint(error):
    response = _admin(error).get("/api/v1/fleet/hosts",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert response.get_json()["hosts"] == [{"uuid": "C02X", "serial_number": "C02SERIAL",
                                             "enrolled": True, "last_seen_at": None}]
