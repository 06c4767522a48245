"""admin-config composition root: wires settings, stores, services and the Flask app."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from mdmscep_common.crypto import SecretBox
from mdmscep_common.health import dependency_checks
from mdmscep_common.http import register_healthz
from mdmscep_common.settings import Settings

from .activities import ActivityService
from .api import api
from .auth import Authenticator
from .certificate_authorities import CertificateAuthorityService
from .certificates import CertificateDirectory
from .configuration_profiles import HostProfileDirectory, ProfileService
from .errors import ApiError
from .hosts import HostDirectory
from .store import (
    ActivityStore,
    ApiTokenStore,
    CertificateAuthorityNames,
    CertificateAuthorityStore,
    ProfileStore,
)

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


def build_services(settings: Settings, db, prober, publisher) -> Services:
    activity_store = ActivityStore()
    profile_store = ProfileStore()
    return Services(
        auth=Authenticator(db, ApiTokenStore(), settings.admin_api_token),
        certificate_authorities=CertificateAuthorityService(
            db, CertificateAuthorityStore(), activity_store, SecretBox(settings.server_private_key),
            prober, publisher, profile_store),
        activities=ActivityService(db, activity_store),
        hosts=HostDirectory(db),
        profiles=ProfileService(db, profile_store, CertificateAuthorityNames(), activity_store,
                                publisher),
        host_profiles=HostProfileDirectory(db),
        certificates=CertificateDirectory(db),
    )


def create_app(services: Services, health) -> Flask:
    app = Flask("admin_config")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.extensions["admin_config"] = services
    app.register_blueprint(api)
    register_healthz(app, health)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(exc.body()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"message": exc.description or exc.name, "errors": []}), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"message": "Internal error; see the admin-config log", "errors": []}), 500

    return app


def create_production_app(settings: Settings) -> Flask:
    from mdmscep_common.bus import Publisher
    from mdmscep_common.db import Database

    from .scep_gateway import ScepGatewayClient

    db = Database(settings.database_url, name="admin-config").open()
    services = build_services(settings, db,
                              ScepGatewayClient(settings.scep_proxy_grpc_addr,
                                                settings.scep_probe_timeout),
                              Publisher(settings.amqp_url))
    return create_app(services, dependency_checks(db, settings.amqp_url))
