"""A CA's compressed answer is limited by the bytes received, never inflated into memory.

A tiny loopback HTTP server answers every request with a gzip bomb (200 MiB of zeros in about
200 KiB, Content-Encoding: gzip) although it is asked for `Accept-Encoding: identity`. Through
the proxy (GetCACert, PKIOperation) and through ProbeServer the answer is refused (502, or a
probe reason) while the Python memory allocated at peak stays a few MiB (tracemalloc), not the
hundreds an inflated answer would take. A CA that compresses a normal answer still works: the
host gets the decoded bytes with no Content-Encoding.
"""

from __future__ import annotations

import gzip
import http.server
import tracemalloc
import zlib

import pytest

from scep_proxy.ca_connections import ca_client
from scep_proxy.probe import probe_scep_server
from scep_proxy.scep_protocol import OID_MESSAGE_TYPE, read_cert_rep
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.proxy_world import ProxyWorld, RecordingCa
from tests.support.serving import serve_in_thread

PKCS_REQ = scep_message([(OID_MESSAGE_TYPE, "19")])
BOMB_INFLATED_BYTES = 200 << 20
MAX_PEAK_BYTES = 16 << 20  # the answer limits are 2 MiB (proxy) and 1 MiB (probe)


def _gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(BOMB_INFLATED_BYTES >> 20)]
    return b"".join(parts) + compressor.flush()


class CompressingCa:
    """Answers with `body` and `Content-Encoding: gzip` whatever it was asked for; records
    the Accept-Encoding of each request."""

    def __init__(self, body: bytes, content_type: str):
        owner = self
        self.accept_encodings: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                owner.accept_encodings.append(self.headers.get("Accept-Encoding", ""))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve_in_thread(self._server)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/scep"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def bomb():
    body = _gzip_bomb()
    assert len(body) < 512 << 10
    return body


@pytest.fixture
def world():
    world = ProxyWorld()
    yield world
    world.close()


def _peak_while(call):
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_proxy_refuses_a_gzip_bomb_without_inflating_it(world, bomb):
    ca = CompressingCa(bomb, "application/x-pki-message")
    try:
        world.fake.add_ca("Bomb_CA", ca.url)
        host, profile, code = world.grant(ca="Bomb_CA")
        path = world.path(host, profile, code, ca="Bomb_CA")
        cert, cert_peak = _peak_while(lambda: world.client.get(
            path, query_string={"operation": "GetCACert"}))
        pki, pki_peak = _peak_while(lambda: world.client.post(
            path + "?operation=PKIOperation", data=PKCS_REQ))
    finally:
        ca.close()
    for response in (cert, pki):
        assert response.status_code == 502
        assert "larger than 2 MiB" in response.get_data(as_text=True)
    assert cert_peak < MAX_PEAK_BYTES and pki_peak < MAX_PEAK_BYTES, (cert_peak, pki_peak)
    assert ca.accept_encodings and set(ca.accept_encodings) == {"identity"}
    assert world.publisher.messages[-1][1]["outcome"] == "upstream_error"


def test_the_probe_refuses_a_gzip_bomb_without_inflating_it(bomb):
    ca = CompressingCa(bomb, "application/x-x509-ca-cert")
    try:
        with ca_client(5) as client:
            result, peak = _peak_while(lambda: probe_scep_server(client, ca.url, 5))
    finally:
        ca.close()
    assert not result.ok and "larger than 1 MiB" in result.reason
    assert peak < MAX_PEAK_BYTES, peak
    assert set(ca.accept_encodings) == {"identity"}


def test_a_ca_that_compresses_a_normal_answer_still_works(world):
    plain = RecordingCa()  # for a real CertRep and CA certificate
    ca_der, cert_rep = plain.ca_der, plain.cert_rep
    plain.close()
    cert_ca = CompressingCa(gzip.compress(ca_der), "application/x-x509-ca-cert")
    pki_ca = CompressingCa(gzip.compress(cert_rep), "application/x-pki-message")
    try:
        world.fake.add_ca("Zipped_Certs", cert_ca.url)
        world.fake.add_ca("Zipped_Reps", pki_ca.url)
        host, profile, code = world.grant(ca="Zipped_Certs")
        cert = world.client.get(world.path(host, profile, code, ca="Zipped_Certs"),
                                query_string={"operation": "GetCACert"})
        host, profile, code = world.grant(ca="Zipped_Reps")
        pki = world.client.post(world.path(host, profile, code, ca="Zipped_Reps")
                                + "?operation=PKIOperation", data=PKCS_REQ)
        with ca_client(5) as client:
            probed = probe_scep_server(client, cert_ca.url, 5)
    finally:
        cert_ca.close()
        pki_ca.close()
    assert cert.status_code == 200 and cert.data == ca_der
    assert "Content-Encoding" not in cert.headers
    assert pki.status_code == 200 and read_cert_rep(pki.data).pki_status == "SUCCESS"
    assert world.publisher.messages[-1][1]["outcome"] == "issued"
    assert probed.ok and probed.ca_certificates_der == [ca_der]
