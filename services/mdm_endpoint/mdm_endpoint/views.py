"""HTTP views of the MDM endpoint: translate HTTP to a service call and errors to status codes."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, current_app, request

from .identity import SignatureInvalid, SignatureMalformed, SignatureMissing
from .protocol import ProtocolError
from .service import MdmError

log = logging.getLogger(__name__)

mdm = Blueprint("mdm", __name__, url_prefix="/mdm")

ENROLLMENT_CONTENT_TYPE = "application/x-apple-aspen-config"
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


@mdm.get("/enroll")
def enroll():
    deps = _deps()
    secret = request.args.get("secret", "")
    expected = deps.settings.enroll_secret
    if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
        return _text(403, "enrollment requires the enrollment secret")
    if not deps.settings.identity_scep_url:
        return _text(503, "enrollment is not configured (IDENTITY_SCEP_URL)")
    return Response(deps.enrollment_profile(), mimetype=ENROLLMENT_CONTENT_TYPE)


def _signed_body() -> tuple[bytes, object]:
    body = request.get_data(cache=False)
    identity = _deps().verifier.verify(request.headers.get("Mdm-Signature"), body)
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
