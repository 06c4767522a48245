"""A CA of known capacity for pacing tests: an HTTP relay in front of a real scepserver that lets
one PKIOperation through at a time and holds each at least `service_seconds` (capacity: 1 /
service_seconds certificates per second; requests beyond wait their turn, so an overdriven CA
answers slower, as a CA working one request at a time does). A test can make it slow
(`extra_seconds` more per PKIOperation) or failing (`fail_status`: answered without asking the
CA) mid-run. GetCACaps and GetCACert pass straight through."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ThrottledCa:
    def __init__(self, target: str, service_seconds: float):
        """`target`: the scepserver's base URL (without /scep)."""
        relay = self
        self.service_seconds = service_seconds
        self.extra_seconds = 0.0
        self.fail_status: int | None = None
        self.issued: list[float] = []  # time.monotonic() of each PKIOperation answered 200
        self._turn = threading.Lock()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if "PKIOperation" in self.path:
                    status, content_type, data = relay._pki_operation(target + self.path, body,
                                                                      self.command)
                else:
                    status, content_type, data = _forward(target + self.path, body, self.command)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/scep"

    def _pki_operation(self, url: str, body: bytes | None, method: str):
        if self.fail_status is not None:
            return self.fail_status, "text/plain", b"the CA is overloaded"
        with self._turn:  # one at a time, each at least service_seconds
            started = time.monotonic()
            answer = _forward(url, body, method)
            rest = self.service_seconds + self.extra_seconds - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
        if answer[0] == 200:
            with self._lock:
                self.issued.append(time.monotonic())
        return answer

    def issued_per_second(self, seconds: float) -> float:
        """Certificates issued per second over the last `seconds`."""
        since = time.monotonic() - seconds
        with self._lock:
            return sum(1 for t in self.issued if t >= since) / seconds

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _forward(url: str, body: bytes | None, method: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            return answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()
