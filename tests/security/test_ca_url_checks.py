"""A CA's URL cannot turn scep-proxy into a scanner of its network or a reader of cloud metadata.

- ProbeServer gives one reason for every way of getting no answer (connection refused, reset,
  unresolved name, TLS failure, timeout), and never repeats the URL's userinfo (user:password@)
  in a reason or a log line.
- Link-local and cloud metadata addresses and names are refused as CA URLs: by admin-config
  when the URL says so (422, like a wrong scheme), by the probe when the name resolves to one
  (400 "Invalid SCEP URL"), and by scep-proxy on every connection it opens, so a name that
  resolves elsewhere later (DNS rebinding) is never forwarded to. Loopback CAs keep working.

Names are resolved by a table the test sets (the client's resolver hook: a name can be made to
resolve to a metadata address only that way here); every other step is real: the gRPC
ScepGateway with mutual TLS, admin-config's API, httpx connections to loopback servers. No
request is ever sent to a non-loopback address: the checks refuse before connecting.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import logging
import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from admin_config.app import build_services, create_app
from admin_config.scep_gateway import ScepGatewayClient
from mdmscep.v1 import scep_gateway_pb2_grpc
from mdmscep_common.ca_addresses import forbidden_address, forbidden_host
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from scep_proxy.ca_connections import ForbiddenCaAddress, ca_client
from scep_proxy.gateway import ScepGatewayServicer
from scep_proxy.main import upstream_client as gateway_client
from scep_proxy.probe import probe_scep_server, server_name
from scep_proxy.upstream import Upstream, UpstreamFailure
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.ports import free_port
from tests.support.proxy_world import ProxyWorld
from tests.support.recording_publisher import RecordingPublisher
from tests.support.service_certs import service_tls, tls_env
from tests.support.serving import serve_in_thread
from tests.support.settings import load_settings

CAS = "/api/v1/fleet/certificate_authorities"
PROBE_TIMEOUT = 1.5
USERINFO_SECRET = "pr0be-pa55word"


class TableDns:
    """getaddrinfo for the CA client: names in `table` resolve to its addresses, an address
    literal to itself, anything else is unknown (what a resolver answers NXDOMAIN with)."""

    def __init__(self):
        self.table: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        self.lookups.append(host)
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [host]
        except ValueError:
            if host not in self.table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            addresses = self.table[host]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]


class _Served:
    def __init__(self, handler, tls: ssl.SSLContext | None = None):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        serve_in_thread(self.server)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _scep_handler(ca_der: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/missing"):
                status, kind, body = 404, "text/plain", b"no such path\n"
            elif "GetCACert" in self.path:
                status, kind, body = 200, "application/x-x509-ca-cert", ca_der
            elif "GetCACaps" in self.path:
                status, kind, body = 200, "text/plain", b"POSTPKIOperation\n"
            else:
                status, kind, body = 404, "text/plain", b"no\n"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    return Handler


class _Resetting:
    """Accepts, reads the request, and resets the connection without an answer."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self):
        self._stop = True
        self._socket.close()


class LoopbackPki:
    """A CA and server certificates for loopback TLS servers."""

    def __init__(self, directory: Path):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test TLS CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, dns_name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), False)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = self.directory / f"{dns_name}.pem", self.directory / f"{dns_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context


@pytest.fixture
def dns():
    return TableDns()


@pytest.fixture
def pki(tmp_path, monkeypatch):
    pki = LoopbackPki(tmp_path)
    # The CA client trusts SSL_CERT_FILE like httpx's default transport does.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    return pki


@pytest.fixture
def scep_ca(pki):
    from tests.support.proxy_world import _stub_ca_der

    server = _Served(_scep_handler(_stub_ca_der()))
    yield server
    server.close()


@pytest.fixture
def client(dns, pki):
    client = ca_client(5, resolve=dns)
    yield client
    client.close()


def _probe(client, url):
    return probe_scep_server(client, url, PROBE_TIMEOUT)


# --- one reason for every way of getting no answer --------------------------------------------

def test_every_connection_failure_gets_the_same_reason(client, dns, pki, scep_ca):
    resetting = _Resetting()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    wrong_name = _Served(_scep_handler(b""), tls=pki.server_context("other.test"))
    dns.table["ca.wrong-cert.test"] = ["127.0.0.1"]
    try:
        urls = {
            "refused": f"http://127.0.0.1:{free_port()}/scep",
            "reset": f"http://127.0.0.1:{resetting.port}/scep",
            "unresolved": "http://no-such-ca.test:8443/scep",
            "tls to a plain server": f"https://127.0.0.1:{scep_ca.port}/scep",
            "tls certificate for another name": f"https://ca.wrong-cert.test:{wrong_name.port}/scep",
            "timeout": f"http://127.0.0.1:{silent.getsockname()[1]}/scep",
        }
        results = {kind: _probe(client, url) for kind, url in urls.items()}
    finally:
        resetting.close()
        silent.close()
        wrong_name.close()
    reasons = {kind: result.reason.replace(server_name(urls[kind]), "<server>")
               for kind, result in results.items()}
    assert not any(result.ok for result in results.values())
    assert len(set(reasons.values())) == 1, reasons
    reason = next(iter(reasons.values()))
    assert reason == f"could not connect to <server>, or it did not answer within {PROBE_TIMEOUT:g} s"


def test_a_working_ca_over_tls_is_checked_against_its_name_not_its_address(client, dns, pki):
    dns.table["ca.pinned.test"] = ["127.0.0.1"]
    server = _Served(_scep_handler(pki.cert.public_bytes(serialization.Encoding.DER)),
                     tls=pki.server_context("ca.pinned.test"))
    try:
        result = _probe(client, f"https://ca.pinned.test:{server.port}/scep")
    finally:
        server.close()
    assert result.ok, result.reason
    assert "ca.pinned.test" in dns.lookups


def test_userinfo_is_never_repeated(client, scep_ca, caplog):
    caplog.set_level(logging.DEBUG)
    for url in (f"http://admin:{USERINFO_SECRET}@127.0.0.1:{free_port()}/scep",
                f"http://admin:{USERINFO_SECRET}@127.0.0.1:{scep_ca.port}/missing?operation=x",
                f"https://admin:{USERINFO_SECRET}@127.0.0.1:{scep_ca.port}/scep",
                f"http://admin:{USERINFO_SECRET}@169.254.169.254/latest/meta-data"):
        result = _probe(client, url)
        assert not result.ok
        assert USERINFO_SECRET not in result.reason and "admin:" not in result.reason, result
    for record in caplog.records:
        assert USERINFO_SECRET not in str(record.__dict__)


# --- link-local and metadata addresses ---------------------------------------------------------

FORBIDDEN_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fe80::1]/scep",
    "http://[fe80::1%25lo]:8080/scep",
    "http://[fd00:ec2::254]/latest",
    "http://[::ffff:169.254.169.254]/latest",
    "http://100.100.100.200/latest/meta-data",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata.goog/computeMetadata/v1/",
    "https://169.254.10.20:8443/scep",
]


@pytest.mark.parametrize("address, forbidden", [
    ("169.254.169.254", True), ("169.254.0.1", True), ("fe80::1", True), ("fe80::1%lo", True),
    ("fd00:ec2::254", True), ("100.100.100.200", True), ("168.63.129.16", True),
    ("::ffff:169.254.169.254", True), ("64:ff9b::a9fe:a9fe", True), ("2002:a9fe:a9fe::1", True),
    ("0.0.0.0", True), ("::", True), ("224.0.0.1", True),
    ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False), ("192.168.1.10", False),
    ("100.100.100.201", False), ("fd00:ec2::253", False), ("2001:db8::1", False),
    ("ca.example", False),
])
def test_which_addresses_no_ca_may_have(address, forbidden):
    assert forbidden_address(address) is forbidden
    assert forbidden_host(f"[{address}]" if ":" in address else address) is forbidden


@pytest.fixture
def gateway(dns, pki):
    """scep-proxy's ScepGateway over mutual TLS, with the CA client production uses."""
    client = ca_client(5, resolve=dns)
    server = GrpcServer(0, ["mdmscep.v1.ScepGateway"], HealthChecks({}),
                        tls=service_tls("scep-proxy"))
    server.add(scep_gateway_pb2_grpc.add_ScepGatewayServicer_to_server,
               ScepGatewayServicer(client, probe_timeout=PROBE_TIMEOUT))
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)
    client.close()


@pytest.fixture
def admin(db, gateway, database_url):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "DATABASE_URL": database_url,
                              **tls_env("admin-config")})
    services = build_services(settings, db,
                              ScepGatewayClient(gateway, service_tls("admin-config"), 5.0),
                              RecordingPublisher())
    app = create_app(services, HealthChecks({}))
    client = app.test_client()

    def create(name: str, url: str):
        return client.post(CAS, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                           json={"custom_scep_proxy": {"name": name, "url": url,
                                                       "challenge": "ch4llenge!"}})
    return create


def _stored(db_conn) -> int:
    return db_conn.execute("SELECT count(*) AS n FROM certificate_authorities").fetchone()["n"]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_a_forbidden_address_in_the_url_is_422(admin, db_conn, dns, url):
    response = admin("Metadata", url)
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["name"] == "url"
    assert "link-local or cloud metadata" in response.json["message"]
    assert _stored(db_conn) == 0 and dns.lookups == []  # refused before any probe


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "fd00:ec2::254",
                                     "100.100.100.200", "::ffff:169.254.169.254"])
def test_a_name_resolving_to_a_forbidden_address_fails_the_probe(admin, db_conn, dns, address):
    dns.table["ca.sneaky.test"] = ["127.0.0.1", address]
    response = admin("Sneaky", "http://ca.sneaky.test:8080/scep")
    assert response.status_code == 400, response.json
    assert response.json["message"] == "Invalid SCEP URL. Please correct and try again."
    assert "link-local or cloud metadata" in response.json["errors"][0]["reason"]
    assert _stored(db_conn) == 0


def test_a_loopback_ca_can_still_be_saved(admin, db_conn, dns, scep_ca):
    dns.table["ca.local.test"] = ["127.0.0.1"]
    assert admin("Local", f"http://127.0.0.1:{scep_ca.port}/scep").status_code == 200
    assert admin("Named", f"http://ca.local.test:{scep_ca.port}/scep").status_code == 200
    assert _stored(db_conn) == 2


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_the_clients_refuse_forbidden_addresses_before_connecting(dns, url):
    # Both production clients: the gateway's (probes) and the forwarding one (upstream.py).
    for client in (gateway_client(), ca_client(5, resolve=dns)):
        with client, pytest.raises(ForbiddenCaAddress):
            client.get(url)


def test_a_name_that_resolves_to_metadata_later_is_never_forwarded_to(dns, scep_ca):
    dns.table["ca.rebinding.test"] = ["127.0.0.1"]
    url = f"http://ca.rebinding.test:{scep_ca.port}/scep?operation=GetCACaps"
    with ca_client(5, resolve=dns) as client:
        assert Upstream(client, 5).get(url).status == 200  # as when the CA was saved
    dns.table["ca.rebinding.test"] = ["169.254.169.254"]
    with ca_client(5, resolve=dns) as client:  # a new connection, as after keep-alive expiry
        with pytest.raises(UpstreamFailure) as failure:
            Upstream(client, 5).get(url)
    assert failure.value.kind == "misconfigured"  # a configuration error, not a CA outage
    assert "link-local or cloud metadata" in failure.value.detail


def test_the_proxy_answers_502_for_a_stored_ca_url_that_is_link_local():
    # A CA saved before these checks existed: the processor still hands its URL out.
    world = ProxyWorld()
    try:
        world.fake.add_ca("Old_CA", "http://[fe80::1]:8080/scep")
        host, profile, code = world.grant(ca="Old_CA")
        response = world.client.get(world.path(host, profile, code, ca="Old_CA"),
                                    query_string={"operation": "GetCACaps"})
    finally:
        world.close()
    assert response.status_code == 502
    assert "link-local or cloud metadata" in response.get_data(as_text=True)
    # Not reported as the CA being down: that would retry the host for a day.
    assert all(not m[1]["ca_unreachable"] for m in world.publisher.messages)
