from flask import Flask
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.http import register_healthz
from tests.support.service_certs import service_tls


def test_healthz_is_503_while_a_dependency_fails():
    state = {"db": True}
    app = Flask("t")
    register_healthz(app, HealthChecks({"database": lambda: state["db"]}, cache_seconds=0))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    state["db"] = False
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "failing"}


def test_grpc_health_follows_the_checks():
    state = {"ok": False}
    server = GrpcServer(0, ["mdmscep.v1.Demo"], HealthChecks({"x": lambda: state["ok"]},
                                                             cache_seconds=0),
                        tls=service_tls("mdm-endpoint"), poll_seconds=0.05)
    server.start()
    try:
        with service_tls("admin-config").channel(f"127.0.0.1:{server.port}",
                                                 "mdm-endpoint") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status(service=""):
                return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            state["ok"] = True
            import time
            deadline = time.monotonic() + 5
            while status("mdmscep.v1.Demo") != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        server.stop(grace=0)
