"""scep-proxy HTTP app (composition root). The proxy routes arrive with the SCEP proxy issue."""

from __future__ import annotations

from flask import Flask

from mdmscep_common.db import Database
from mdmscep_common.health import dependency_checks
from mdmscep_common.http import register_healthz
from mdmscep_common.settings import Settings


def create_app(settings: Settings, db: Database) -> Flask:
    app = Flask("scep_proxy")
    register_healthz(app, dependency_checks(db, settings.amqp_url))
    return app
