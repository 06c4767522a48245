"""deploy/nginx/nginx.conf run by a real nginx (Debian's) in front of local backends: requests for
/mdm/scep/proxy/ spread over every address the scep-proxy name resolves to, with `%2C` in the id
kept intact, and /mdm/ and /api/ reach their services.

Only what Docker provides is replaced: a tiny DNS server stands in for Docker's embedded DNS (it
answers the compose service names with loopback addresses, three for scep-proxy), and echo servers
stand in for the services, answering with the request line they received."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.deployfiles import NGINX_CONF, ROUTES
from tests.support.ports import free_port, wait_for_port
from tests.support.serving import serve_in_thread

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None,
                                reason="needs nginx (Debian package nginx-light)")

ADDRESSES = {"scep-proxy": ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
             "mdm-endpoint": ["127.0.0.5"], "admin-config": ["127.0.0.6"]}
PROXY_ID = "6E0DB7D6-1D6B-4C2B-9A43-1E0F5F1C2B3A%2Cprofile-uuid%2CTest_SCEP%2Cone-time-code-9f2"


class FakeDockerDns(threading.Thread):
    """Answers A queries for the names in ADDRESSES over UDP (RFC 1035, one question)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                query, client = self.sock.recvfrom(512)
            except OSError:
                return
            self.sock.sendto(self.answer(query), client)

    @staticmethod
    def answer(query: bytes) -> bytes:
        labels, offset = [], 12
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1:offset + 1 + length].decode())
            offset += 1 + length
        qtype = struct.unpack("!H", query[offset + 1:offset + 3])[0]
        question = query[12:offset + 5]
        addresses = ADDRESSES.get(".".join(labels), []) if qtype == 1 else []
        known = ".".join(labels) in ADDRESSES
        flags = 0x8180 if known else 0x8183  # NXDOMAIN for unknown names
        header = query[:2] + struct.pack("!HHHHH", flags, 1, len(addresses), 0, 0)
        records = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 10, 4) + socket.inet_aton(ip)
                           for ip in addresses)
        return header + question + records

    def stop(self):
        self.sock.close()


class EchoHandler(BaseHTTPRequestHandler):
    def _echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"backend": self.server.name, "target": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _echo  # noqa: N815 - http.server names its handlers so

    def log_message(self, *_args):
        pass


@contextlib.contextmanager
def run_nginx(tmp_path, dns_port: int, ports: dict[str, int]):
    """Debian's nginx with deploy/nginx/nginx.conf, rewritten only for paths, ports and DNS."""
    listen = free_port()
    conf = NGINX_CONF.read_text()
    replacements = {
        "resolver 127.0.0.11 ": f"resolver 127.0.0.1:{dns_port} ",
        "listen 8080;": f"listen 127.0.0.1:{listen};",
        "pid /tmp/nginx.pid;": f"pid {tmp_path}/nginx.pid;",
        "access_log /dev/stdout redacted;": f"access_log {tmp_path}/access.log redacted;",
        "error_log /dev/stderr warn;": f"error_log {tmp_path}/error.log warn;",
        "http {": "http {\n" + "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        **{f"{host}:{port}": f"{host}:{ports[host]}" for host, port in ROUTES.values()},
    }
    for old, new in replacements.items():
        assert old in conf, f"nginx.conf changed: {old!r} not found"
        conf = conf.replace(old, new)
    (tmp_path / "nginx.conf").write_text(conf)
    process = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(listen)
        yield listen
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def entry(tmp_path, dns):
    """nginx with the compose routing in front of echo servers; returns its port."""
    ports = {name: free_port() for name in ADDRESSES}
    servers = []
    for name, addresses in ADDRESSES.items():
        for address in addresses:
            server = ThreadingHTTPServer((address, ports[name]), EchoHandler)
            server.name = f"{name}@{address}"
            serve_in_thread(server)
            servers.append(server)
    try:
        with run_nginx(tmp_path, dns.port, ports) as listen:
            yield listen, tmp_path
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def request(port: int, method: str, target: str, body: bytes | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, target, body=body)
        response = connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if response.status == 200 else data)
    finally:
        connection.close()


def test_proxy_requests_spread_over_every_replica_with_the_id_intact(entry):
    port, _ = entry
    backends = Counter()
    for n in range(45):
        target = f"/mdm/scep/proxy/{PROXY_ID}?operation=GetCACaps&n={n}"
        status, echoed = request(port, "GET", target)
        assert status == 200
        assert echoed["target"] == target, "nginx passes the request line unchanged"
        backends[echoed["backend"]] += 1
    assert set(backends) == {f"scep-proxy@{a}" for a in ADDRESSES["scep-proxy"]}, backends
    status, echoed = request(port, "POST", f"/mdm/scep/proxy/{PROXY_ID}?operation=PKIOperation",
                             body=b"\x30\x82" + b"\x00" * 4000)
    assert status == 200 and echoed["backend"].startswith("scep-proxy@")


def test_mdm_and_api_prefixes_reach_their_services(entry):
    port, _ = entry
    assert request(port, "GET", "/mdm/enroll?secret=s3")[1]["backend"] == "mdm-endpoint@127.0.0.5"
    assert request(port, "PUT", "/mdm/connect", body=b"<plist/>")[1]["backend"] == \
        "mdm-endpoint@127.0.0.5"
    status, echoed = request(port, "GET", "/api/v1/fleet/certificate_authorities")
    assert (status, echoed["backend"]) == (200, "admin-config@127.0.0.6")
    assert request(port, "GET", "/other")[0] == 404


def test_bodies_over_two_mebibytes_are_refused_and_secrets_stay_out_of_the_log(entry):
    port, tmp_path = entry
    status, _ = request(port, "POST", f"/mdm/scep/proxy/{PROXY_ID}?operation=PKIOperation",
                        body=b"\x00" * (2 * 1024 * 1024 + 1))
    assert status == 413
    request(port, "GET", "/mdm/enroll?secret=enroll-secret-7")
    # nginx logs the 413 only after its lingering close of the upload: wait for both lines.
    deadline = time.monotonic() + 10
    while True:
        log = (tmp_path / "access.log").read_text()
        if log.count("\n") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "one-time-code-9f2" not in log and "enroll-secret-7" not in log
    assert '"path":"/mdm/scep/proxy/-"' in log and '"status":413' in log
