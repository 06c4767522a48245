"""One HTTP/1.1 request over a raw socket that reads the answer while still sending the body.

A server that refuses an oversized body answers (413) before reading it and closes; a client that
first sends everything (httpx) then only sees "server disconnected". Here the body goes out from a
second thread, and sending stops quietly once the server has closed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the server took before answering


def send(url: str, method: str, body: bytes | Iterable[bytes], headers: dict[str, str] | None = None,
         chunked: bool = False, timeout: float = 30.0) -> RawAnswer:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    chunks = [body] if isinstance(body, bytes) else body
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        if not isinstance(body, bytes):
            raise ValueError("a body with Content-Length must be bytes")
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    sent = [0]

    def sender():
        try:
            sock.sendall(head)
            for chunk in chunks:
                if chunked:
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    sock.sendall(chunk)
                sent[0] += len(chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what it said is read below

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    data = b""
    try:
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
            if _complete(data):
                break
    finally:
        # shutdown wakes a sender blocked in sendall (a server that answered without reading the
        # body and kept the socket open); close alone would leave it blocked until its timeout.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        thread.join(timeout)
        sock.close()
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    if not head_bytes:
        raise ConnectionError(f"no answer from {url}")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), answer_headers, rest, sent[0])


def _complete(data: bytes) -> bool:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value.strip() or 0)
    return False
