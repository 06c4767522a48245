"""admin-config composition root: wires settings, stores, services and the Flask app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
import psycopg_pool
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from mdmscep_common.crypto import SecretBox
from mdmscep_common.health import HealthChecks
from mdmscep_common.http import Warnings, register_healthz, register_metrics
from mdmscep_common.service_tls import ADMIN_CONFIG, ServiceTls

from .activities import ActivityService
from .api import api, routes
from .auth import Authenticator
from .certificate_authorities import CertificateAuthorityService
from .configuration_profiles import HostProfileDirectory, ProfileService
from .delivery_directory_client import DeliveryDirectoryClient
from .errors import ApiError
from .host_certificate_directory import CertificateDirectory
from .host_registry_client import HostRegistryClient
from .hosts import HostDirectory
from .labels import LabelService
from .scep_gateway import ScepGatewayClient
from .settings import AdminConfigSettings
from .store import (
    ActivityStore,
    ApiTokenStore,
    CertificateAuthorityNames,
    CertificateAuthorityStore,
    LabelStore,
    ProfileStore,
    TeamStore,
)
from .teams import TeamService
from .tokens import TokenService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 << 20  # profiles are small; 2 MiB is generous


@dataclass
class Services:
    auth: Authenticator
    certificate_authorities: CertificateAuthorityService
    activities: ActivityService
    hosts: HostDirectory
    profiles: ProfileService
    host_profiles: HostProfileDirectory
    certificates: CertificateDirectory
    tokens: TokenService
    teams: TeamService
    labels: LabelService


def build_services(settings: AdminConfigSettings, db, prober, events, host_registry=None,
                   deliveries=None, ca_requests=None) -> Services:
    """`prober` and `ca_requests` are scep-proxy's ScepGateway, `host_registry` mdm-endpoint's
    HostRegistry, `deliveries` the processor's DeliveryDirectory: the owners of what admin-config
    shows but does not store. Those left None are gRPC clients made from `settings`. `events`:
    where changes add the events they announce (the outbox; mdmscep_common.outbox.Events)."""
    if host_registry is None or deliveries is None or ca_requests is None:
        tls = ServiceTls.from_settings(settings, ADMIN_CONFIG)
        host_registry = host_registry or HostRegistryClient(settings.mdm_grpc_addr, tls)
        deliveries = deliveries or DeliveryDirectoryClient(settings.processor_grpc_addr, tls)
        ca_requests = ca_requests or ScepGatewayClient(settings.scep_proxy_grpc_addr, tls,
                                                       settings.scep_probe_timeout)
    activity_store = ActivityStore()
    profile_store = ProfileStore()
    team_store = TeamStore()
    label_store = LabelStore()
    profiles = ProfileService(db, profile_store, CertificateAuthorityNames(), activity_store,
                              events, registry=host_registry, deliveries=deliveries,
                              teams=team_store, labels=label_store)
    return Services(
        auth=Authenticator(db, ApiTokenStore(), settings.admin_api_token,
                           trusted_proxies=settings.trusted_proxies),
        certificate_authorities=CertificateAuthorityService(
            db, CertificateAuthorityStore(), activity_store, SecretBox.from_settings(settings),
            prober, events, profile_store, ca_requests=ca_requests, deliveries=deliveries),
        activities=ActivityService(db, activity_store),
        hosts=HostDirectory(db, host_registry, deliveries, activity_store, teams=team_store,
                            labels=label_store, events=events),
        profiles=profiles,
        host_profiles=HostProfileDirectory(db, profile_store, host_registry, deliveries),
        certificates=CertificateDirectory(db, profile_store, host_registry, deliveries),
        tokens=TokenService(db, ApiTokenStore(), activity_store),
        teams=TeamService(db, team_store, activity_store, events, registry=host_registry,
                          profiles=profiles, profile_store=profile_store),
        labels=LabelService(db, label_store, activity_store, events, registry=host_registry,
                            profile_store=profile_store),
    )


DATABASE_RETRY_AFTER_SECONDS = 5


def create_app(services: Services, health, warnings: Warnings | None = None) -> Flask:
    app = Flask("admin_config")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.extensions["admin_config"] = services
    app.register_blueprint(api)
    if undeclared := routes.undeclared(app):
        # Such a route would answer admins only (api.py `authenticate` fails closed): say so now.
        raise RuntimeError(f"admin API routes without a role (api.py routes): {undeclared}")
    register_healthz(app, health, warnings)
    register_metrics(app)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        return jsonify(exc.body()), exc.status, headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"message": exc.description or exc.name, "errors": []}), exc.code

    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(psycopg_pool.PoolTimeout)
    def database_unavailable(exc: Exception):
        # A database restart or failover: the request changed nothing; the client may retry.
        log.warning("database unavailable", extra={"error": exc.__class__.__name__})
        return (jsonify({"message": "The database is unavailable; retry later", "errors": []}),
                503, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"message": "Internal error; see the admin-config log", "errors": []}), 500

    return app


def create_production_app(settings: AdminConfigSettings) -> Flask:
    from mdmscep_common.db import Database
    from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, Outbox

    from .background_duties import CustomCaWarnings

    db = Database(settings.database_url, name="admin-config").open()
    gateway = ScepGatewayClient(settings.scep_proxy_grpc_addr,
                                ServiceTls.from_settings(settings, ADMIN_CONFIG),
                                settings.scep_probe_timeout)
    services = build_services(settings, db, gateway, Outbox(ADMIN_CONFIG_OUTBOX),
                              ca_requests=gateway)
    # The API needs its database only: its events wait in the outbox for `admin-config worker`,
    # which also runs the background duties (background_duties.py).
    return create_app(services, HealthChecks({"database": db.ping}),
                      warnings=CustomCaWarnings(db, settings.credential_warning_days))
