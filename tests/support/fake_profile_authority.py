"""An in-process gRPC ProfileAuthority for scep-proxy tests and the benchmark.

It answers AuthorizeScep from a table the test controls (CAs, host deliveries, one-time codes)
with the statuses of the real processor (proto: 400/403/404/409), uses a code up on PKIOperation,
and records every call so a test can tell whether a code was asked about or used up.

It is served like the real one (GrpcServer: mutual TLS, only scep-proxy may call it) with the
profile-processor certificate of the tests' service PKI (tests/support/service_certs.py).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from mdmscep.v1 import profile_authority_pb2, profile_authority_pb2_grpc
from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.service_tls import PROFILE_PROCESSOR

from .service_certs import service_tls


@dataclass(frozen=True)
class Call:
    host_uuid: str
    profile_uuid: str
    ca_name: str
    one_time_code: str
    operation: str


@dataclass
class Delivery:
    ca_name: str
    status: str = "pending"
    codes: dict[str, float] = field(default_factory=dict)  # code -> expiry (time.time())
    used: set[str] = field(default_factory=set)
    any_code: bool = False  # benchmark: every code is valid and none is used up


class FakeProfileAuthority(profile_authority_pb2_grpc.ProfileAuthorityServicer):
    def __init__(self) -> None:
        self.cas: dict[str, tuple[int, str]] = {}
        # CA name -> max_concurrent_requests sent when allowed; a CA not here gets 0, as from a
        # processor that does not send it (the proxy's SCEP_PROXY_CA_CONCURRENCY applies).
        self.limits: dict[str, int] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self.calls: list[Call] = []
        self.delay = 0.0  # seconds each answer waits (a slow processor)
        self._lock = threading.Lock()

    # --- the table -------------------------------------------------------------------------
    def add_ca(self, name: str, url: str, max_concurrent_requests: int = 0) -> None:
        with self._lock:
            self.cas[name] = (len(self.cas) + 1, url)
            if max_concurrent_requests:
                self.limits[name] = max_concurrent_requests

    def add_delivery(self, host_uuid: str, profile_uuid: str, ca_name: str,
                     status: str = "pending", any_code: bool = False) -> Delivery:
        with self._lock:
            delivery = Delivery(ca_name, status, any_code=any_code)
            self.deliveries[(host_uuid, profile_uuid)] = delivery
            return delivery

    def new_code(self, host_uuid: str, profile_uuid: str, ttl: float = 3600) -> str:
        code = secrets.token_urlsafe(16)
        with self._lock:
            self.deliveries[(host_uuid, profile_uuid)].codes[code] = time.time() + ttl
        return code

    def code_used(self, code: str) -> bool:
        with self._lock:
            return any(code in d.used for d in self.deliveries.values())

    def calls_for(self, code: str, operation: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.one_time_code == code
                    and (operation is None or c.operation == operation)]

    # --- the RPC ---------------------------------------------------------------------------
    def AuthorizeScep(self, request, context):
        call = Call(request.host_uuid, request.profile_uuid, request.ca_name,
                    request.one_time_code, request.operation)
        with self._lock:
            self.calls.append(call)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            return self._decide(call)

    def GiveBackScepCode(self, request, context):  # noqa: N802 - gRPC method name
        call = Call(request.host_uuid, request.profile_uuid, request.ca_name,
                    request.one_time_code, "GiveBack")
        with self._lock:
            self.calls.append(call)
            delivery = self.deliveries.get((call.host_uuid, call.profile_uuid))
            given_back = (delivery is not None and delivery.ca_name == call.ca_name
                          and delivery.status == "pending" and call.one_time_code in delivery.used)
            if given_back:
                delivery.used.discard(call.one_time_code)
        return profile_authority_pb2.GiveBackScepCodeResponse(given_back=given_back)

    def _decide(self, call: Call):
        def refuse(refusal: int, reason: str):
            return profile_authority_pb2.AuthorizeScepResponse(
                allowed=False, reason=reason, refusal=refusal)

        if call.operation not in ("GetCACaps", "GetCACert", "PKIOperation"):
            return refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_OPERATION, "unknown operation")
        if call.ca_name not in self.cas:
            return refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_CA, "unknown certificate authority")
        if not any(host == call.host_uuid for host, _ in self.deliveries):
            return refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_HOST, "unknown host")
        delivery = self.deliveries.get((call.host_uuid, call.profile_uuid))
        if delivery is None or delivery.ca_name != call.ca_name:
            return refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_PROFILE, "unknown profile for this host and CA")
        if delivery.status != "pending":
            return refuse(ScepRefusal.SCEP_REFUSAL_NOT_PENDING,
                          f"the profile's delivery is {delivery.status}, not pending")
        if not delivery.any_code:
            expiry = delivery.codes.get(call.one_time_code)
            if expiry is None:
                return refuse(ScepRefusal.SCEP_REFUSAL_CODE_UNKNOWN, "unknown one-time code")
            if call.one_time_code in delivery.used:
                return refuse(ScepRefusal.SCEP_REFUSAL_CODE_USED, "one-time code already used")
            if expiry < time.time():
                return refuse(ScepRefusal.SCEP_REFUSAL_CODE_EXPIRED, "one-time code expired")
            if call.operation == "PKIOperation":
                delivery.used.add(call.one_time_code)
        ca_id, url = self.cas[call.ca_name]
        return profile_authority_pb2.AuthorizeScepResponse(
            allowed=True, upstream_url=url, ca_id=ca_id,
            max_concurrent_requests=self.limits.get(call.ca_name, 0))


class FakeAuthorityServer:
    """The fake served on a loopback port: pass `address` as PROCESSOR_GRPC_ADDR, and the
    scep-proxy identity of service_certs.tls_env to the proxy."""

    def __init__(self, fake: FakeProfileAuthority | None = None, max_workers: int = 16):
        self.fake = fake or FakeProfileAuthority()
        self._server = GrpcServer(0, ["mdmscep.v1.ProfileAuthority"], HealthChecks({}),
                                  tls=service_tls(PROFILE_PROCESSOR), max_workers=max_workers)
        self._server.add(profile_authority_pb2_grpc.add_ProfileAuthorityServicer_to_server,
                         self.fake)
        self.port = self._server.port
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=0)
