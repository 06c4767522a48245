import io
import json
import logging

from mdmscep_common import logs


def _logger(secrets=()):
    stream = io.StringIO()
    handler = logs.json_handler("test")
    handler.setStream(stream)
    for s in secrets:
        logs.register_secret(s)
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_lines_are_json_with_service_and_extras():
    logger, stream = _logger()
    logger.info("hello %s", "world", extra={"ca": "Test_SCEP"})
    line = json.loads(stream.getvalue())
    assert line["message"] == "hello world"
    assert line["service"] == "test" and line["ca"] == "Test_SCEP" and line["level"] == "INFO"


def test_registered_secrets_and_secret_fields_are_masked():
    logger, stream = _logger(["super-secret-challenge"])
    logger.warning("probe with %s failed", "super-secret-challenge",
                   extra={"challenge": "whatever", "url": "http://x/?c=super-secret-challenge"})
    try:
        raise ValueError("bad super-secret-challenge")
    except ValueError:
        logger.exception("boom")
    out = stream.getvalue()
    assert "super-secret-challenge" not in out and "whatever" not in out
    assert out.count(logs.REDACTED) >= 3
