"""mdm-endpoint HTTP composition root: settings, identity verifier, stores, service, Flask app."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from mdmscep_common.credentials import CredentialMonitor
from mdmscep_common.crypto import SecretBox
from mdmscep_common.failure_limits import FailureLimiter
from mdmscep_common.health import HealthChecks
from mdmscep_common.http import register_healthz, register_metrics
from mdmscep_common.outbox import Events

from .enrollment import enroll_failure_limiter, enrollment_profile, push_topic
from .identity import IdentityVerifier, load_ca_certificates
from .service import MdmService
from .settings import MdmEndpointSettings
from .store import CommandStore, HostStore
from .views import mdm

log = logging.getLogger(__name__)

# ProfileList and CertificateList answers of a well-stocked Mac stay far below this.
MAX_BODY_BYTES = 8 << 20
UNCONFIGURED_TOPIC = "com.apple.mgmt.External.unconfigured"


@dataclass
class Dependencies:
    settings: MdmEndpointSettings
    verifier: IdentityVerifier
    service: MdmService
    topic: str
    enroll_failures: FailureLimiter

    def enrollment_profile(self) -> bytes:
        return enrollment_profile(self.settings.mdm_public_url, self.topic,
                                  self.settings.identity_scep_url or "",
                                  self.settings.identity_scep_challenge or "")


def configured_topic(settings: MdmEndpointSettings) -> str:
    if not settings.apns_cert:
        log.warning("APNS_CERT is not set: pushes are skipped and enrollment profiles carry a "
                    "placeholder topic")
        return UNCONFIGURED_TOPIC
    with open(settings.apns_cert, "rb") as f:
        return push_topic(f.read())


def identity_verifier(settings: MdmEndpointSettings) -> IdentityVerifier:
    if not settings.mdm_identity_ca_certs:
        log.warning("MDM_IDENTITY_CA_CERTS is not set: every signed request will be refused")
        return IdentityVerifier([])
    return IdentityVerifier(load_ca_certificates(settings.mdm_identity_ca_certs))


def create_app(settings: MdmEndpointSettings, db, events: Events, health: HealthChecks,
               verifier: IdentityVerifier | None = None,
               credentials: CredentialMonitor | None = None) -> Flask:
    app = Flask("mdm_endpoint")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["mdm_endpoint"] = Dependencies(
        settings=settings, verifier=verifier or identity_verifier(settings),
        service=MdmService(db, HostStore(), CommandStore(), events,
                           SecretBox.from_settings(settings)),
        topic=configured_topic(settings), enroll_failures=enroll_failure_limiter(db))
    app.register_blueprint(mdm)
    register_healthz(app, health, credentials.warnings if credentials else None)
    register_metrics(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return Response(f"{exc.name}\n", status=exc.code, mimetype="text/plain")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return Response("internal error\n", status=500, mimetype="text/plain")

    return app
