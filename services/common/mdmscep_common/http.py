"""HTTP scaffolding shared by the Flask services: `/healthz`, `/metrics`, JSON errors, gunicorn
launch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from werkzeug.exceptions import RequestEntityTooLarge

from . import metrics
from .health import HealthChecks

log = logging.getLogger(__name__)

Warnings = Callable[[], list[dict[str, Any]]]

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def request_body() -> bytes:
    """The request body, or 413 when it is over the app's MAX_CONTENT_LENGTH. Werkzeug refuses a
    declared Content-Length over the limit, but cuts a chunked body at the limit without an
    error: a body that fills the limit exactly with no length declared is taken as over it."""
    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and request.content_length is None and len(body) >= limit:
        raise RequestEntityTooLarge()
    return body


def register_healthz(app: Flask, checks: HealthChecks, warnings: Warnings | None = None) -> None:
    """`GET /healthz`: 200 when every check passes, 503 otherwise. `warnings` (e.g. credentials
    about to expire) are listed in the body and never change the status."""
    @app.get("/healthz")
    def healthz():
        results = checks.run()
        ok = all(results.values())
        body = {"status": "ok" if ok else "unavailable",
                "checks": {name: "ok" if passed else "failing" for name, passed in results.items()},
                "warnings": warnings() if warnings else []}
        return jsonify(body), 200 if ok else 503


def register_metrics(app: Flask, extra: Iterable[metrics.Exposition] = ()) -> None:
    """Count and time every request by route (the URL rule such as `/mdm/scep/proxy/<path:raw_id>`,
    never the raw path: proxy ids carry one-time codes), method and status; serve `GET /metrics`.
    `extra`: metric sets with registries of their own, appended to the exposition."""
    extra = list(extra)

    @app.before_request
    def _start_timer():
        g.mdmscep_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("mdmscep_started", None)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        metrics.HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        if started is not None:
            metrics.HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        body, content_type = metrics.exposition(extra)
        return Response(body, content_type=content_type)


class GunicornApplication(BaseApplication):
    """Runs a WSGI app under gunicorn with options from code (no config file to ship)."""

    def __init__(self, app: Any, options: dict[str, Any]):
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def gunicorn_logconfig(service: str) -> dict[str, Any]:
    handler = {"()": "mdmscep_common.logs.json_handler", "service": service}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": handler},
        "root": {"level": "INFO", "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            # Access lines would carry full URLs (one-time codes, secrets in queries): off.
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


class NoAccessLogger(GunicornLogger):
    """gunicorn's logger without access lines, which gunicorn_logconfig turns off (they would
    carry one-time codes): gunicorn builds every line's fields before the level drops it, a
    measurable share of a small request's CPU (docs/benchmarks.md, the mdm-idle profile)."""

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp, req, environ, request_time) -> None:
        pass


def serve_http(app_factory, port: int, workers: int, threads: int, service: str,
               secrets: list[str], timeout: int = 60,
               gunicorn_options: dict[str, Any] | None = None, host: str = "0.0.0.0") -> None:
    """Start gunicorn with gthread workers; each worker builds its own app after the fork so
    connection pools are never shared across processes. `gunicorn_options` adds or overrides
    gunicorn settings (e.g. graceful_timeout, limit_request_line) for one service."""
    from .logs import configure_logging

    configure_logging(service, secrets)
    holder: dict[str, Any] = {}
    # Multiprocess metrics: a fresh directory per run, and a dead worker's live gauges dropped.
    metrics.reset_multiprocess_dir()

    def post_fork(_server, _worker):
        holder["app"] = app_factory()

    def child_exit(_server, worker):
        metrics.mark_worker_dead(worker.pid)

    def wsgi(environ, start_response):
        return holder["app"](environ, start_response)

    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": timeout,
        "graceful_timeout": 20,
        "keepalive": 5,
        "post_fork": post_fork,
        "child_exit": child_exit,
        "logconfig_dict": gunicorn_logconfig(service),
        "logger_class": NoAccessLogger,
        "proc_name": service,
        **(gunicorn_options or {}),
    }
    GunicornApplication(wsgi, options).run()
