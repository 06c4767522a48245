"""APNs pushes for MDM: `POST {APNS_URL}/3/device/<hex token>` with `{"mdm": PushMagic}` over a
few HTTP/2 connections (many concurrent streams each), the push certificate as TLS client
certificate.

The push worker consumes `push.requested` in batches, coalesces hosts, and never runs in the HTTP
service's request path.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import httpx
from prometheus_client import Counter, Histogram

from mdmscep_common.metrics import LATENCY_BUCKETS

from .store import HostStore, PushTarget

log = logging.getLogger(__name__)

# APNs reasons that mean the token will never work again for this topic.
PERMANENT_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken"}
MAX_ATTEMPTS = 3

# The reasons APNs documents (Sending notification requests to APNs, table 4): the only free text
# a push result label may take; anything else is counted by HTTP status.
APNS_REASONS = {
    "BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority",
    "BadTopic", "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType",
    "MissingDeviceToken", "MissingTopic", "PayloadEmpty", "TopicDisallowed", "BadCertificate",
    "BadCertificateEnvironment", "ExpiredProviderToken", "Forbidden", "InvalidProviderToken",
    "MissingProviderToken", "UnrelatedKeyIdInToken", "BadEnvironmentKeyIdInToken", "BadPath",
    "MethodNotAllowed", "ExpiredToken", "Unregistered", "PayloadTooLarge",
    "TooManyProviderTokenUpdates", "TooManyRequests", "InternalServerError", "ServiceUnavailable",
    "Shutdown"}

PUSH_RESULTS = Counter("mdmscep_push_results", "Final result of each host's push, by reason: "
                       "delivered, an APNs reason (Unregistered, BadDeviceToken, ...), "
                       "http_<status>, network_error, or not_configured (no APNS_CERT)",
                       ["reason"])
PUSH_BATCH_DURATION = Histogram("mdmscep_push_batch_duration_seconds", "Time to push one batch "
                                "of hosts, retries included", buckets=LATENCY_BUCKETS)


def result_label(outcome: PushOutcome) -> str:
    if outcome.delivered:
        return "delivered"
    if outcome.status == 0:
        return "network_error"
    return outcome.reason if outcome.reason in APNS_REASONS else f"http_{outcome.status}"


@dataclass(frozen=True)
class PushOutcome:
    host_uuid: str
    status: int  # 0 when no HTTP answer
    reason: str

    @property
    def delivered(self) -> bool:
        return self.status == 200

    @property
    def token_invalid(self) -> bool:
        return self.status == 410 or self.reason in PERMANENT_REASONS

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


class ApnsClient:
    """Sends pushes to APNs over HTTP/2 with the push certificate.

    An https:// APNS_URL gets up to `connections` HTTP/2 connections, each multiplexing up to
    `concurrency` requests at once (or the server's MAX_CONCURRENT_STREAMS if lower), written
    and read in large chunks by one thread per connection: a batch of hosts costs a few system
    calls per hundred pushes. A plain http:// URL goes through httpx, one request per thread."""

    def __init__(self, base_url: str, cert_path: str, key_path: str, ca_path: str | None = None,
                 concurrency: int = 500, timeout: float = 10.0, connections: int = 4):
        self._base_url = base_url.rstrip("/")
        tls = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        tls.load_cert_chain(cert_path, key_path)  # the MDM push certificate authenticates us
        parts = urlsplit(self._base_url)
        self._h2: list[_Http2Pusher] = []
        self._client = None
        if parts.scheme == "https":
            tls.set_alpn_protocols(["h2"])
            self._h2 = [_Http2Pusher(parts.hostname or "", parts.port or 443, parts.path,
                                     tls, concurrency, timeout) for _ in range(max(1, connections))]
            self._pool = ThreadPoolExecutor(len(self._h2), thread_name_prefix="apns")
        else:
            self._client = httpx.Client(
                http2=True, verify=tls, timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
            self._pool = ThreadPoolExecutor(min(concurrency, 64), thread_name_prefix="apns")

    def _send_one(self, target: PushTarget) -> PushOutcome:
        url = f"{self._base_url}/3/device/{target.token.hex()}"
        headers = {"apns-push-type": "mdm", "apns-priority": "10", "apns-expiration": "0"}
        if target.topic:
            headers["apns-topic"] = target.topic
        try:
            response = self._client.post(url, json={"mdm": target.push_magic}, headers=headers)
        except httpx.HTTPError as exc:
            return PushOutcome(target.host_uuid, 0, exc.__class__.__name__)
        return PushOutcome(target.host_uuid, response.status_code,
                           _reason(response.status_code, response.content))

    def send(self, targets: Iterable[PushTarget]) -> list[PushOutcome]:
        if not self._h2:
            return list(self._pool.map(self._send_one, targets))
        targets = list(targets)
        # A large batch is shared by the connections (a server keeps each one's streams to a
        # limit, and its answers on one come while the others are being written); a small
        # one takes one connection.
        shares = max(1, min(len(self._h2), len(targets) // MIN_PUSHES_PER_CONNECTION))
        if shares == 1:
            return self._h2[0].send(targets)
        size = -(-len(targets) // shares)
        parts = [targets[i:i + size] for i in range(0, len(targets), size)]
        results = self._pool.map(lambda pusher, part: pusher.send(part), self._h2, parts)
        return [outcome for part in results for outcome in part]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        if self._h2:
            for pusher in self._h2:
                pusher.close()
        else:
            self._client.close()


CONNECT_TIMEOUT = 5.0
MIN_PUSHES_PER_CONNECTION = 200
_READ_SIZE = 256 * 1024
_STREAM_ID_LIMIT = 2**31 - 1 - 10_000  # open a new connection before stream ids run out


def _reason(status: int, body: bytes) -> str:
    """APNs' `reason` of a refused push (JSON body), else the body's start."""
    if status == 200:
        return ""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        return str(answer.get("reason", ""))
    return body.decode("utf-8", "replace")[:100]


def _payload(push_magic: str) -> bytes:
    # As httpx's json=: compact, UTF-8.
    return json.dumps({"mdm": push_magic}, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _header_value_ok(value: str) -> bool:
    """Visible ASCII (RFC 9113 field values, without the spaces and controls h2 refuses)."""
    return value.isascii() and value.isprintable() and value == value.strip()


class _ConnectionLost(Exception):
    """The connection ended (GOAWAY, EOF, reset, timeout) with requests not yet answered."""


class _Http2Pusher:
    """One TLS HTTP/2 connection to APNs, used by one batch at a time, reopened when needed."""

    def __init__(self, host: str, port: int, path_prefix: str, tls: ssl.SSLContext,
                 concurrency: int, timeout: float):
        self._address = (host, port)
        self._authority = host if port == 443 else f"{host}:{port}"
        self._prefix = path_prefix.rstrip("/")
        self._tls = tls
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: ssl.SSLSocket | None = None
        self._conn: h2.connection.H2Connection | None = None

    # -- connection --------------------------------------------------------------------------

    def _open(self) -> None:
        self.close_connection()
        raw = socket.create_connection(self._address, timeout=CONNECT_TIMEOUT)
        try:
            sock = self._tls.wrap_socket(raw, server_hostname=self._address[0])
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                raise ConnectionError("APNs did not agree to HTTP/2")
        except BaseException:
            raw.close()
            raise
        sock.settimeout(self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Our headers are built below from checked values: h2's per-request header validation
        # and normalization (a third of the sender's CPU) are not needed.
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # The server's SETTINGS (its MAX_CONCURRENT_STREAMS above all) before any request.
        settled = False
        while not settled:
            data = sock.recv(_READ_SIZE)
            if not data:
                sock.close()
                raise ConnectionError("APNs closed the connection at its start")
            for event in conn.receive_data(data):
                settled = settled or isinstance(event, h2.events.RemoteSettingsChanged)
            sock.sendall(conn.data_to_send())
        self._sock, self._conn = sock, conn

    def _usable(self) -> bool:
        """Is the open connection still good? Reads what the server sent meanwhile (settings,
        pings, GOAWAY) without waiting."""
        conn, sock = self._conn, self._sock
        if conn is None or sock is None or conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
            return False
        if conn.highest_outbound_stream_id and conn.highest_outbound_stream_id > _STREAM_ID_LIMIT:
            return False
        try:
            while select.select([sock], [], [], 0)[0]:
                data = sock.recv(_READ_SIZE)
                if not data:
                    return False
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return False
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return False
        return True

    def close_connection(self) -> None:
        if self._sock is not None:
            try:
                if self._conn is not None:
                    self._conn.close_connection()
                    self._sock.sendall(self._conn.data_to_send())
            except (OSError, h2.exceptions.ProtocolError):
                pass
            self._sock.close()
        self._sock = self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_connection()

    # -- pushes ------------------------------------------------------------------------------

    def send(self, targets: list[PushTarget]) -> list[PushOutcome]:
        outcomes: list[PushOutcome | None] = [None] * len(targets)
        queue = deque(range(len(targets)))
        with self._lock:
            # A connection that goes away before taking requests (idle timeout, GOAWAY) is
            # reopened once per batch; requests lost in flight are answered status 0 (retried).
            for _attempt in range(2):
                if not queue:
                    break
                try:
                    if not self._usable():
                        self._open()
                    self._exchange(targets, queue, outcomes)
                except (OSError, ssl.SSLError, h2.exceptions.ProtocolError, _ConnectionLost) as exc:
                    self.close_connection()
                    error = exc.__class__.__name__
                    for i, outcome in enumerate(outcomes):
                        if outcome is None and i not in queue:
                            outcomes[i] = PushOutcome(targets[i].host_uuid, 0, error)
                    if _attempt == 1 or isinstance(exc, (OSError, ssl.SSLError)) and \
                            not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                        for i in queue:
                            outcomes[i] = PushOutcome(targets[i].host_uuid, 0, error)
                        queue.clear()
        return [o if o is not None else PushOutcome(t.host_uuid, 0, "NoAnswer")
                for o, t in zip(outcomes, targets, strict=True)]

    def _headers(self, target: PushTarget, length: int) -> list[tuple[bytes, bytes]]:
        # The path differs for every push: never indexed, so it does not churn the HPACK table
        # that keeps the other headers down to a byte each.
        headers = [(b":method", b"POST"), (b":scheme", b"https"),
                   (b":authority", self._authority.encode()),
                   hpack.NeverIndexedHeaderTuple(
                       b":path", f"{self._prefix}/3/device/{target.token.hex()}".encode()),
                   (b"apns-push-type", b"mdm"), (b"apns-priority", b"10"),
                   (b"apns-expiration", b"0")]
        if target.topic:
            headers.append((b"apns-topic", target.topic.encode()))
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(length).encode())]
        return headers

    def _exchange(self, targets: list[PushTarget], queue: deque[int],
                  outcomes: list[PushOutcome | None]) -> None:
        """Send the queued requests, keeping as many in flight as allowed, and read answers
        until every sent request has one. Sent requests leave the queue."""
        conn, sock = self._conn, self._sock
        in_flight: dict[int, list] = {}  # stream id → [target index, status, body]
        while queue or in_flight:
            limit = min(self._concurrency, conn.remote_settings.max_concurrent_streams)
            while queue and len(in_flight) < limit:
                target = targets[queue[0]]
                if not _header_value_ok(target.topic):
                    # What h2 would refuse to send (and httpx answered with an error).
                    outcomes[queue.popleft()] = PushOutcome(target.host_uuid, 0, "InvalidTopic")
                    continue
                body = _payload(target.push_magic)
                if conn.outbound_flow_control_window < len(body):
                    break  # wait for the server's WINDOW_UPDATE
                index = queue.popleft()
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, self._headers(targets[index], len(body)))
                conn.send_data(stream_id, body, end_stream=True)
                in_flight[stream_id] = [index, 0, b""]
            data = conn.data_to_send()
            if data:
                sock.sendall(data)
            if not in_flight and not queue:
                return
            # Answers, or the WINDOW_UPDATE a request waits for.
            try:
                chunk = sock.recv(_READ_SIZE)
            except TimeoutError:
                raise _ConnectionLost("no answer in time") from None
            if not chunk:
                raise _ConnectionLost("connection closed")
            for event in conn.receive_data(chunk):
                self._on_event(event, conn, in_flight, targets, queue, outcomes)

    @staticmethod
    def _on_event(event, conn, in_flight, targets, queue, outcomes) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            entry = in_flight.get(event.stream_id)
            if entry is not None:
                status = dict(event.headers).get(b":status", b"0")
                entry[1] = int(status) if status.isdigit() else 0
        elif isinstance(event, h2.events.DataReceived):
            entry = in_flight.get(event.stream_id)
            if entry is not None and len(entry[2]) < 4096:
                entry[2] += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            entry = in_flight.pop(event.stream_id, None)
            if entry is not None:
                index, status, body = entry
                outcomes[index] = PushOutcome(targets[index].host_uuid, status,
                                              _reason(status, body))
        elif isinstance(event, h2.events.StreamReset):
            entry = in_flight.pop(event.stream_id, None)
            if entry is not None:
                outcomes[entry[0]] = PushOutcome(targets[entry[0]].host_uuid, 0, "StreamReset")
        elif isinstance(event, h2.events.ConnectionTerminated):
            # Streams above the last one the server took were not processed: send them again
            # on a new connection; the others lost their answers (status 0, retried later).
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id in sorted(in_flight, reverse=True):
                if stream_id > last:
                    queue.appendleft(in_flight.pop(stream_id)[0])
            raise _ConnectionLost("GOAWAY")


class PushSender:
    """Sends pushes for host UUIDs: loads tokens in one query, retries transient failures with
    backoff, and marks tokens APNs rejected for good."""

    def __init__(self, db, hosts: HostStore, apns: ApnsClient | None, backoff: float = 0.5):
        self._db = db
        self._hosts = hosts
        self._apns = apns
        self._backoff = backoff

    def push_hosts(self, host_uuids: list[str]) -> list[PushOutcome]:
        unique = sorted(set(host_uuids))
        if self._apns is None:
            log.warning("push skipped: APNS_CERT/APNS_KEY not configured",
                        extra={"hosts": len(unique)})
            PUSH_RESULTS.labels("not_configured").inc(len(unique))
            return []
        with PUSH_BATCH_DURATION.time():
            outcomes = self._push(unique)
        for label, count in Tally(result_label(outcome) for outcome in outcomes).items():
            PUSH_RESULTS.labels(label).inc(count)
        return outcomes

    def _push(self, unique: list[str]) -> list[PushOutcome]:
        with self._db.transaction() as conn:
            targets = self._hosts.push_targets(conn, unique)
        outcomes: dict[str, PushOutcome] = {}
        pending = targets
        for attempt in range(MAX_ATTEMPTS):
            results = self._apns.send(pending)
            outcomes.update({o.host_uuid: o for o in results})
            retry = {o.host_uuid for o in results if o.retryable}
            pending = [t for t in pending if t.host_uuid in retry]
            if not pending:
                break
            if attempt + 1 < MAX_ATTEMPTS:
                time.sleep(self._backoff * (2 ** attempt))
        invalid = [o.host_uuid for o in outcomes.values() if o.token_invalid]
        if invalid:
            with self._db.transaction() as conn:
                self._hosts.mark_token_invalid(conn, invalid)
        delivered = sum(o.delivered for o in outcomes.values())
        failed = [o for o in outcomes.values() if not o.delivered]
        log.info("pushes sent", extra={"requested": len(unique), "delivered": delivered,
                                       "rejected_by_apns": len(invalid), "failed": len(failed)})
        return list(outcomes.values())
