"""A fake APNs: an HTTP/2 TLS server that requires the MDM push certificate as client certificate,
records every push, answers like APNs, and can wake simulated hosts.

Only what MDM pushes use: `POST /3/device/<hex token>` with `{"mdm": "<PushMagic>"}`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events


@dataclass(frozen=True)
class Push:
    token: str
    push_magic: str
    topic: str
    client_subject: str


class FakeApns:
    def __init__(self, server_cert: str, server_key: str, client_ca: str,
                 on_push: Callable[[Push], None] | None = None, port: int = 0):
        self.pushes: list[Push] = []
        self.refusals: dict[str, tuple[int, str]] = {}  # token → (status, reason)
        self.connections = 0
        self._on_push = on_push
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(server_cert, server_key)
        self._context.load_verify_locations(client_ca)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._requested_port = port
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-apns",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> FakeApns:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._requested_port,
                                                  ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close():
            self._server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def pushes_for(self, token_hex: str) -> list[Push]:
        with self._lock:
            return [p for p in self.pushes if p.token == token_hex]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        subject = ", ".join("=".join(pair) for rdn in peer.get("subject", ()) for pair in rdn)
        with self._lock:
            self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, dict] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = {"headers": dict(event.headers), "body": b""}
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id, streams.pop(event.stream_id), subject)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        break
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, conn, stream_id: int, request: dict, subject: str) -> None:
        headers = request["headers"]
        path = headers.get(":path", "")
        status, reason = 200, ""
        push = None
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            status, reason = 404, "BadPath"
        else:
            token = path.rsplit("/", 1)[-1]
            try:
                payload = json.loads(request["body"])
                push = Push(token, str(payload["mdm"]), headers.get("apns-topic", ""), subject)
            except (ValueError, KeyError, TypeError):
                status, reason = 400, "BadPayload"
            if token in self.refusals:
                status, reason = self.refusals[token]
                push = None
        apns_id = str(uuid.uuid4())
        if status == 200:
            conn.send_headers(stream_id, [(":status", "200"), ("apns-id", apns_id)],
                              end_stream=True)
        else:
            body = json.dumps({"reason": reason}).encode()
            conn.send_headers(stream_id, [(":status", str(status)), ("apns-id", apns_id),
                                          ("content-type", "application/json"),
                                          ("content-length", str(len(body)))])
            conn.send_data(stream_id, body, end_stream=True)
        if push is not None:
            with self._lock:
                self.pushes.append(push)
            if self._on_push:
                self._on_push(push)
