"""gRPC server scaffolding: grpc.health.v1 with real readiness, and graceful SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .health import HealthChecks

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10


class GrpcServer:
    """A grpc.Server whose health service reports NOT_SERVING while a dependency is down."""

    def __init__(self, port: int, service_names: list[str], checks: HealthChecks,
                 max_workers: int = 16, host: str = "0.0.0.0", poll_seconds: float = 2.0):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
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
        log.info("gRPC server started", extra={"port": self.port})

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
