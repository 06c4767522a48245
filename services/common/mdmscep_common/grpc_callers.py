"""Which service may call which internal gRPC method, decided from the caller's certificate.

Mutual TLS (service_tls.py) already refused every caller without a certificate from the service
CA; here each method admits only the service that needs it, so one service's certificate cannot
queue commands, delete hosts or learn a CA's URL. A method not listed is refused: adding a gRPC
service means adding its callers here.
"""

from __future__ import annotations

import logging

import grpc

from .service_tls import ADMIN_CONFIG, PROFILE_PROCESSOR, SCEP_PROXY, SERVICES

log = logging.getLogger(__name__)

# gRPC service → the services whose certificates may call its methods.
CALLERS: dict[str, frozenset[str]] = {
    # AuthorizeScep answers with the CA's hidden URL and uses one-time codes up.
    "mdmscep.v1.ProfileAuthority": frozenset({SCEP_PROXY}),
    "mdmscep.v1.Commander": frozenset({PROFILE_PROCESSOR}),
    "mdmscep.v1.HostRegistry": frozenset({ADMIN_CONFIG}),
    # Deliveries and host certificates belong to the processor; admin-config shows them.
    "mdmscep.v1.DeliveryDirectory": frozenset({ADMIN_CONFIG}),
    # ProbeServer makes scep-proxy fetch any URL it is given.
    "mdmscep.v1.ScepGateway": frozenset({ADMIN_CONFIG}),
    # Health checks (healthcheck.py, the tests' stack) may come from any service's certificate.
    "grpc.health.v1.Health": frozenset(SERVICES),
}


def grpc_service_of(method: str) -> str:
    """`/mdmscep.v1.Commander/Enqueue` → `mdmscep.v1.Commander`."""
    return method.lstrip("/").partition("/")[0]


def allowed(method: str, caller_names: list[str]) -> bool:
    return bool(CALLERS.get(grpc_service_of(method), frozenset()) & set(caller_names))


def caller_names(context: grpc.ServicerContext) -> list[str]:
    """The names the caller's certificate gives it (SAN DNS names, else its CN), as gRPC's TLS
    reports them; empty without an authenticated peer."""
    return [name.decode("utf-8", "replace") for name in (context.peer_identities() or [])]


class CallerAuthorization(grpc.ServerInterceptor):
    """Runs a method's handler only for its callers (CALLERS); anyone else gets
    PERMISSION_DENIED, which MetricsInterceptor counts like any other status."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        method = handler_call_details.method

        def guard(behavior):
            def guarded(request, context):
                names = caller_names(context)
                if not allowed(method, names):
                    log.warning("gRPC call refused: caller not allowed",
                                extra={"method": method, "caller": ",".join(names) or "none"})
                    context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                  f"{method} is not open to this caller")
                return behavior(request, context)
            return guarded

        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for kind, make in kinds.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(guard(behavior), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler
