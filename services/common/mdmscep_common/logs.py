"""JSON logging to stdout, with a last line of defence against secrets in log lines.

Code must not log secrets in the first place; the filter replaces any registered secret value
(configuration secrets, CA challenges seen by this process) and any field whose name looks secret.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

from pythonjsonlogger.json import JsonFormatter

REDACTED = "********"
_SECRET_FIELD = re.compile(r"(challenge|password|passwd|secret|token|private_key|authorization)",
                           re.IGNORECASE)
_MAX_REGISTERED = 10_000

_lock = threading.Lock()
_secrets: dict[str, None] = {}  # insertion-ordered set, bounded


def register_secret(value: str | None) -> None:
    """Make sure `value` is masked wherever it would appear in a log line of this process."""
    if not value or len(value) < 4:
        return  # masking tiny strings would garble ordinary words
    with _lock:
        _secrets.pop(value, None)
        _secrets[value] = None
        while len(_secrets) > _MAX_REGISTERED:
            _secrets.pop(next(iter(_secrets)))


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = redact(str(record.msg))
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD_ATTRS:
                continue
            if _SECRET_FIELD.search(key):
                record.__dict__[key] = REDACTED
            elif isinstance(value, str):
                record.__dict__[key] = redact(value)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def json_handler(service: str) -> logging.Handler:
    """A stdout handler writing one JSON object per line, secrets masked."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(
        "{asctime}{levelname}{name}{message}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"service": service},
        datefmt="%Y-%m-%dT%H:%M:%S%z"))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(service: str, secrets: list[str] | tuple[str, ...] = (),
                      level: str = "INFO") -> None:
    for secret in secrets:
        register_secret(secret)
    handler = json_handler(service)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "amqp", "kombu", "grpc", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
