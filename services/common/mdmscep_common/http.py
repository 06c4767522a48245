"""HTTP scaffolding shared by the Flask services: `/healthz`, JSON errors, gunicorn launch."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from gunicorn.app.base import BaseApplication

from .health import HealthChecks

log = logging.getLogger(__name__)


def register_healthz(app: Flask, checks: HealthChecks) -> None:
    @app.get("/healthz")
    def healthz():
        results = checks.run()
        ok = all(results.values())
        body = {"status": "ok" if ok else "unavailable",
                "checks": {name: "ok" if passed else "failing" for name, passed in results.items()}}
        return jsonify(body), 200 if ok else 503


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


def serve_http(app_factory, port: int, workers: int, threads: int, service: str,
               secrets: list[str], timeout: int = 60,
               gunicorn_options: dict[str, Any] | None = None, host: str = "0.0.0.0") -> None:
    """Start gunicorn with gthread workers; each worker builds its own app after the fork so
    connection pools are never shared across processes. `gunicorn_options` adds or overrides
    gunicorn settings (e.g. graceful_timeout, limit_request_line) for one service."""
    from .logs import configure_logging

    configure_logging(service, secrets)
    holder: dict[str, Any] = {}

    def post_fork(_server, _worker):
        holder["app"] = app_factory()

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
        "logconfig_dict": gunicorn_logconfig(service),
        "proc_name": service,
        **(gunicorn_options or {}),
    }
    GunicornApplication(wsgi, options).run()
