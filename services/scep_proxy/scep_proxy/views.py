"""HTTP views of the proxy: translate the request into a ScepRequest, the Answer or typed error
back into a response, and count it. Nothing else happens here."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request

from mdmscep_common.client_address import client_address
from mdmscep_common.proxy_urls import PROXY_PATH

from .errors import ProxyError
from .proxy import Answer, ScepProxy, ScepRequest
from .scep_protocol import MAX_MESSAGE_BYTES, PKI_OPERATION

scep_routes = Blueprint("scep_proxy", __name__)


def _proxy() -> ScepProxy:
    return current_app.extensions["scep_proxy"]


def _read_body() -> tuple[bytes | None, int]:
    """The raw POST body (any content type), read no further than one byte past the limit."""
    declared = request.content_length
    if declared is not None and declared > MAX_MESSAGE_BYTES:
        return None, declared  # refused unread
    body = request.stream.read(MAX_MESSAGE_BYTES + 1)
    return body, len(body)


def response_for(answer: Answer) -> Response:
    response = Response(answer.body, status=answer.status)
    # The CA's content type exactly as sent (Flask would otherwise add a charset or a default).
    if answer.content_type:
        response.headers["Content-Type"] = answer.content_type
    else:
        del response.headers["Content-Type"]
    if answer.retry_after is not None:
        response.headers["Retry-After"] = str(answer.retry_after)
    return response


@scep_routes.route(PROXY_PATH, defaults={"raw_id": ""}, methods=["GET", "POST"])
@scep_routes.route(PROXY_PATH + "<path:raw_id>", methods=["GET", "POST"])
def scep(raw_id: str):
    started = time.monotonic()
    operation = request.args.get("operation")
    body, body_length = None, None
    if request.method == "POST" and operation == PKI_OPERATION:
        body, body_length = _read_body()
    proxy = _proxy()
    client = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                            proxy.trusted_proxies)
    scep_request = ScepRequest(raw_id=raw_id, operation=operation, method=request.method,
                               message=request.args.get("message"), body=body,
                               body_length=body_length, client=client)
    try:
        answer = proxy.handle(scep_request)
    except ProxyError as exc:
        answer = Answer.from_error(exc)
    proxy.metrics.observe(operation, answer.ca_label, answer.status, time.monotonic() - started)
    return response_for(answer)
