"""scep-proxy HTTP composition root: wires settings, the authority client, the upstream pool,
caches, limits, outcome records (with their events) and metrics into the Flask app. One call per
gunicorn worker process."""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass, field

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from mdmscep_common.health import HealthChecks
from mdmscep_common.http import register_healthz, register_metrics
from mdmscep_common.service_tls import SCEP_PROXY, ServiceTls

from .cache import TtlCache
from .client_limits import SharedClientRefusalLimiter
from .limits import CaLimiter, FleetCaLimiter
from .metrics import ProxyMetrics
from .outcomes import OutcomeRecorder
from .profile_authority_client import Authority, CachingAuthority, ProfileAuthorityClient
from .proxy import TEXT_PLAIN, ScepProxy
from .settings import ScepProxySettings
from .upstream import Upstream, upstream_client
from .views import scep_routes

log = logging.getLogger(__name__)

MAX_CACHED_ANSWERS = 1024


@dataclass
class ProxyParts:
    """What build_proxy made, so the caller can close it."""

    proxy: ScepProxy
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("error while closing")


def build_proxy(settings: ScepProxySettings, outcomes: OutcomeRecorder, authority: Authority | None = None,
                metrics: ProxyMetrics | None = None, limiter=None,
                client_limiter=None) -> ProxyParts:
    closers = []
    if authority is None:
        client = ProfileAuthorityClient(settings.processor_grpc_addr,
                                        ServiceTls.from_settings(settings, SCEP_PROXY))
        closers.append(client.close)
        authority = client
    http_client = upstream_client(settings.scep_upstream_timeout,
                                  max_connections=max(20, settings.http_threads * 4))
    closers.append(http_client.close)
    proxy = ScepProxy(
        authority=CachingAuthority(authority),
        upstream=Upstream(http_client, settings.scep_upstream_timeout),
        answers=TtlCache(settings.scep_proxy_cache_ttl, MAX_CACHED_ANSWERS),
        limiter=limiter or CaLimiter(settings.scep_proxy_ca_concurrency,
                                     settings.scep_proxy_queue_timeout),
        outcomes=outcomes,
        metrics=metrics or ProxyMetrics(),
        client_limiter=client_limiter,
        trusted_proxies=settings.trusted_proxies)
    return ProxyParts(proxy, closers)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message.rstrip("\n") + "\n", status=status, headers=headers,
                    content_type=TEXT_PLAIN)


def create_app(proxy: ScepProxy, health: HealthChecks) -> Flask:
    app = Flask("scep_proxy")
    app.extensions["scep_proxy"] = proxy
    app.register_blueprint(scep_routes)
    register_healthz(app, health)
    # The proxy's own metrics (per CA and operation) follow the shared HTTP/bus ones.
    register_metrics(app, extra=[proxy.metrics])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        allowed = getattr(exc, "valid_methods", None)
        return _text(exc.code or 400, f"SCEP proxy: {exc.description or exc.name}",
                     {"Allow": ", ".join(allowed)} if allowed else None)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return _text(500, "SCEP proxy: internal error")

    return app


def create_production_app(settings: ScepProxySettings) -> Flask:
    """The app of one gunicorn worker: its own pools, caches and config.changed listener."""
    from mdmscep_common.db import Database
    from mdmscep_common.health import dependency_checks
    from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, Outbox

    from .config_events import ConfigListener
    from .outcome_metrics import CountingRecorder
    from .outcome_records import OutcomeStore

    # Outcome records (written off the request path, outcome_records.py) and refusal counts.
    db = Database(settings.database_url, max_size=4, name="scep-proxy").open()
    outcome_store = OutcomeStore(db, Outbox(SCEP_PROXY_OUTBOX))
    outcomes = CountingRecorder(outcome_store)
    # Fleet-wide per-CA limit (every replica shares the slots) and per-CA statistics.
    limiter = FleetCaLimiter(settings.database_url, settings.scep_proxy_ca_concurrency,
                             settings.scep_proxy_queue_timeout, settings.http_threads)
    # Refused requests per client address, counted for every worker and replica.
    parts = build_proxy(settings, outcomes, limiter=limiter,
                        client_limiter=SharedClientRefusalLimiter(db))
    parts.closers += [limiter.close, outcome_store.close]  # closed in reverse: outcomes first
    listener = ConfigListener(settings.amqp_url, parts.proxy.forget_ca).start()
    parts.closers = [db.close, listener.stop, *parts.closers]
    atexit.register(parts.close)
    return create_app(parts.proxy, dependency_checks(db, settings.amqp_url))
