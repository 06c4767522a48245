"""gRPC server scaffolding: mutual TLS with per-method callers, grpc.health.v1 with real
readiness, call metrics, and graceful SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import metrics
from .grpc_callers import CallerAuthorization
from .health import HealthChecks
from .service_tls import ServiceTls

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times unary calls by method (the registered name, e.g.
    `/mdmscep.v1.Commander/Enqueue`) and status code. Unknown methods never reach a handler, so
    the method label only takes registered values."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def observed(request, context):
            started = time.perf_counter()
            failed = False
            try:
                return inner(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                code = context.code()
                name = code.name if code is not None else ("UNKNOWN" if failed else "OK")
                metrics.GRPC_REQUESTS.labels(method, name).inc()
                metrics.GRPC_DURATION.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A grpc.Server over mutual TLS only (callers need a certificate from the service CA, and
    each method admits only its callers: grpc_callers.py), on `host` (GRPC_BIND_ADDRESS), whose
    health service reports NOT_SERVING while a dependency is down."""

    def __init__(self, port: int, service_names: list[str], checks: HealthChecks, *,
                 tls: ServiceTls, host: str = "127.0.0.1", max_workers: int = 16,
                 poll_seconds: float = 2.0):
        # Metrics first, so a refused caller is counted (PERMISSION_DENIED) like any answer.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  interceptors=[MetricsInterceptor(), CallerAuthorization()],
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.host = host
        self.port = self.server.add_secure_port(listen_address(host, port),
                                                tls.server_credentials())
        self._service_names = ["", *service_names]
        self._checks = checks
        self._poll_seconds = poll_seconds
        self._stopping = threading.Event()

    def add(self, register: Callable[[object, grpc.Server], None], servicer: object) -> None:
        register(servicer, self.server)

    def _update_health(self) -> None:
        serving = self._checks.healthy()
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in self._service_names:
            self.health.set(name, status)

    def _watch_health(self) -> None:
        while not self._stopping.wait(self._poll_seconds):
            self._update_health()

    def start(self) -> None:
        self._update_health()
        self.server.start()
        threading.Thread(target=self._watch_health, name="grpc-health", daemon=True).start()
        log.info("gRPC server started", extra={"host": self.host, "port": self.port})

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def run_until_signal(stop: Callable[[], None]) -> None:
    """Block the main thread until SIGTERM/SIGINT, then call `stop` (graceful drain)."""
    done = threading.Event()

    def on_signal(signum, _frame):
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    stop()
