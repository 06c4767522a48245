"""The scep-proxy app in-process (as app.py builds it) in front of a recording stub CA, authorized
by tests/support/fake_profile_authority.py over real gRPC: for fuzz and security tests of the SCEP
request path. No database or broker: scep.result events go to a RecordingPublisher."""

from __future__ import annotations

import http.server
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.serialization import Encoding

from mdmscep_common.health import HealthChecks
from mdmscep_common.proxy_urls import PROXY_PATH, ProxyId, encode_id
from scep_proxy.app import build_proxy, create_app
from scep_proxy.scep_protocol import OID_MESSAGE_TYPE, OID_PKI_STATUS
from scep_proxy.settings import ScepProxySettings
from tests.support.recording_publisher import RecordingPublisher

from .fake_profile_authority import FakeAuthorityServer
from .identity_pki import IdentityCa
from .service_certs import tls_env
from .serving import serve_in_thread

CA = "Test_SCEP"


@dataclass(frozen=True)
class CaRequest:
    method: str
    path: str
    query: dict
    body_length: int
    host_header: str


_STUB_CA_DER: list[bytes] = []


def _stub_ca_der() -> bytes:
    if not _STUB_CA_DER:  # an RSA key takes a moment: made once per test process
        _STUB_CA_DER.append(IdentityCa("stub SCEP CA").certificate.public_bytes(Encoding.DER))
    return _STUB_CA_DER[0]


class RecordingCa:
    """A stub SCEP CA on a loopback port: records every request, answers like a CA."""

    def __init__(self, path: str = "/scep"):
        from tests.scep_proxy.test_scep_proxy_protocol import scep_message

        self.path = path
        self.requests: list[CaRequest] = []
        self.ca_der = _stub_ca_der()
        self.cert_rep = scep_message([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "0")])
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                query = parse_qs(parts.query)
                owner.requests.append(CaRequest(self.command, parts.path, query, length,
                                                self.headers.get("Host", "")))
                operation = (query.get("operation") or [""])[0]
                if operation == "GetCACaps":
                    status, kind, body = 200, "text/plain", b"POSTPKIOperation\nSHA-256\nAES\n"
                elif operation == "GetCACert":
                    status, kind, body = 200, "application/x-x509-ca-cert", owner.ca_der
                elif operation == "PKIOperation":
                    status, kind, body = 200, "application/x-pki-message", owner.cert_rep
                else:
                    status, kind, body = 404, "text/plain", b"unknown operation\n"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve_in_thread(self._server)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ProxyWorld:
    def __init__(self, **env: str):
        self.ca = RecordingCa()
        self.authority = FakeAuthorityServer()
        self.fake = self.authority.fake
        self.fake.add_ca(CA, self.ca.url)
        self.publisher = RecordingPublisher()
        self.settings = ScepProxySettings.from_env({
            "PROCESSOR_GRPC_ADDR": self.authority.address, **tls_env("scep-proxy"),
            "SCEP_UPSTREAM_TIMEOUT": "3", "SCEP_PROXY_CACHE_TTL": "0", **env})
        self.parts = build_proxy(self.settings, self.publisher)
        self.proxy = self.parts.proxy
        self.app = create_app(self.proxy, HealthChecks({}))
        self.client = self.app.test_client()
        self._clients = 0

    def grant(self, status: str = "pending", ttl: float = 3600, ca: str = CA) -> tuple[str, str, str]:
        """A new delivery with a fresh one-time code: (host_uuid, profile_uuid, code)."""
        host, profile = str(uuid.uuid4()).upper(), str(uuid.uuid4())
        self.fake.add_delivery(host, profile, ca, status=status)
        return host, profile, self.fake.new_code(host, profile, ttl=ttl)

    def new_client_address(self) -> str:
        """An address no request of this world came from yet (10.0.0.0/8)."""
        self._clients += 1
        return f"10.{self._clients >> 16 & 255}.{self._clients >> 8 & 255}.{self._clients & 255}"

    @staticmethod
    def path(host: str, profile: str, code: str, ca: str = CA) -> str:
        return PROXY_PATH + encode_id(ProxyId(host, profile, ca, code))

    def close(self) -> None:
        self.parts.close()
        self.authority.stop()
        self.ca.close()
