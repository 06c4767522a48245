"""HTTP views of the MDM endpoint: translate HTTP to a service call and errors to status codes."""

from __future__ import annotations

import hmac
import logging
import threading

import psycopg
from flask import Blueprint, Response, current_app, request

from mdmscep_common.client_address import client_address
from mdmscep_common.http import request_body

from .identity import SignatureInvalid, SignatureMalformed, SignatureMissing
from .protocol import ProtocolError
from .service import MdmError

log = logging.getLogger(__name__)

mdm = Blueprint("mdm", __name__, url_prefix="/mdm")

ENROLLMENT_CONTENT_TYPE = "application/x-apple-aspen-config"
# The verifier parses Mdm-Signature with asn1crypto, which sets each class up lazily on first use
# without a lock: two threads of a fresh worker parsing at once could see a half-built class and
# refuse a genuine signature with 400 ("Mdm-Signature is not valid CMS: ValueError"). Verifying
# one signature at a time per process costs little: the parse is pure Python under the GIL.
_VERIFY_LOCK = threading.Lock()
PLIST_CONTENT_TYPE = "application/xml; charset=utf-8"


def _deps():
    return current_app.extensions["mdm_endpoint"]


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


@mdm.errorhandler(SignatureMissing)
@mdm.errorhandler(SignatureMalformed)
@mdm.errorhandler(ProtocolError)
def bad_request(exc: Exception):
    return _text(400, str(exc))


@mdm.errorhandler(SignatureInvalid)
def forbidden(exc: Exception):
    return _text(403, str(exc))


@mdm.errorhandler(MdmError)
def mdm_error(exc: MdmError):
    return _text(exc.status, str(exc))


@mdm.errorhandler(psycopg.OperationalError)  # psycopg_pool.PoolTimeout is one too
def database_unavailable(exc: Exception):
    # The database is restarting or unreachable: nothing was committed; the host tries again.
    log.warning("database unavailable; answered 503", extra={"error": exc.__class__.__name__})
    response = _text(503, "the MDM server cannot reach its database; retry later")
    response.headers["Retry-After"] = "5"
    return response


@mdm.get("/enroll")
def enroll():
    deps = _deps()
    expected = deps.settings.enroll_secret
    if not expected:
        return _text(403, "enrollment requires the enrollment secret")
    # Wrong secrets are counted per client (enrollment.ENROLL_FAILURE_LIMIT); one over its limit
    # is refused before its secret is compared.
    client = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                            deps.settings.trusted_proxies)
    retry_after = deps.enroll_failures.retry_after(client)
    if retry_after:
        response = _text(429, "too many wrong enrollment secrets from this address; retry later")
        response.headers["Retry-After"] = str(retry_after)
        return response
    secret = request.args.get("secret", "")
    if not hmac.compare_digest(secret.encode(), expected.encode()):
        deps.enroll_failures.failed(client)
        return _text(403, "enrollment requires the enrollment secret")
    if not deps.settings.identity_scep_url:
        return _text(503, "enrollment is not configured (IDENTITY_SCEP_URL)")
    return Response(deps.enrollment_profile(), mimetype=ENROLLMENT_CONTENT_TYPE)


def _signed_body() -> tuple[bytes, object]:
    body = request_body()
    with _VERIFY_LOCK:
        try:
            identity = _deps().verifier.verify(request.headers.get("Mdm-Signature"), body)
        except (SignatureMissing, SignatureMalformed, SignatureInvalid):
            raise
        except Exception as exc:  # noqa: BLE001 - the header is the client's; see below
            # The verifier reads nothing but the client's header and body: what it did not
            # expect (a signer certificate cryptography cannot load: ValueError, InvalidVersion)
            # is still malformed input, a 400, not a 500.
            log.warning("Mdm-Signature refused: unreadable certificate or structure",
                        extra={"error": exc.__class__.__name__})
            raise SignatureMalformed(f"Mdm-Signature is not valid: {exc.__class__.__name__}") \
                from None
    return body, identity


@mdm.put("/checkin")
def checkin():
    body, identity = _signed_body()
    _deps().service.checkin(body, identity)
    return Response(b"", status=200)


@mdm.put("/connect")
def connect():
    body, identity = _signed_body()
    command = _deps().service.connect(body, identity)
    if command is None:
        return Response(b"", status=200)
    return Response(command, status=200, content_type=PLIST_CONTENT_TYPE)
