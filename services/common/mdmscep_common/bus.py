"""RabbitMQ bus (kombu): one durable topic exchange, persistent messages, publisher confirms,
manual acknowledgement after the work commits, bounded prefetch and a dead-letter queue per queue.

Queues are quorum queues: RabbitMQ counts deliveries itself, so a message that keeps failing (or
keeps killing its consumer) is dead-lettered after DELIVERY_LIMIT attempts instead of looping.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kombu
from kombu import Connection, Exchange, Queue, binding
from kombu.mixins import ConsumerMixin
from kombu.pools import producers
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from . import metrics
from .queue_depths import QueueDepths

log = logging.getLogger(__name__)

EXCHANGE_NAME = "mdmscep"
DEAD_LETTER_EXCHANGE_NAME = "mdmscep.dlx"
DELIVERY_LIMIT = 5

EXCHANGE = Exchange(EXCHANGE_NAME, type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange(DEAD_LETTER_EXCHANGE_NAME, type="topic", durable=True)

# Routing keys: what each message says (the queues that receive them: work_queues.py).
CONFIG_CHANGED = "config.changed"
HOST_ENROLLED = "host.enrolled"
HOST_CHECKED_OUT = "host.checked_out"
HOST_DELETED = "host.deleted"
HOST_FACTS_CHANGED = "host.facts_changed"
DELIVERY_RESEND = "delivery.resend"
COMMAND_RESULT = "command.result"
PUSH_REQUESTED = "push.requested"
SCEP_RESULT = "scep.result"
CREDENTIAL_EXPIRING = "credential.expiring"
CERTIFICATES_RENEWED = "certificates.renewed"

# A replayed dead letter goes straight to its queue (default exchange) and carries the routing
# key it was first published with in this header, which consumers use instead (mdmscep-dlq).
ORIGINAL_ROUTING_KEY_HEADER = "x-mdmscep-routing-key"
# How often consumers measure the depth of their queues and dead-letter queues.
QUEUE_DEPTH_INTERVAL = 15.0

PUBLISH_RETRY_POLICY = {"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 3}


class PoisonMessage(Exception):
    """The message can never be handled (malformed or unknown); it goes to the dead-letter queue."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of a dependency that is down for a while (database, another service): the handler
    is retried in place instead of spending the message's delivery limit."""
    import grpc
    import psycopg
    import psycopg_pool

    return (psycopg.OperationalError, psycopg_pool.PoolTimeout, grpc.RpcError)


def connection(amqp_url: str, **kwargs: Any) -> Connection:
    # Publisher confirms: publish() returns only once the broker has taken the message.
    return Connection(amqp_url, transport_options={"confirm_publish": True},
                      connect_timeout=5, **kwargs)


def dead_letter_queue_name(queue_name: str) -> str:
    return f"{queue_name}.dlq"


def durable_queue(name: str, routing_keys: list[str]) -> Queue:
    return Queue(
        name,
        bindings=[binding(EXCHANGE, routing_key=key) for key in routing_keys],
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE_NAME,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": DELIVERY_LIMIT,
        })


def dead_letter_queue(queue_name: str) -> Queue:
    return Queue(dead_letter_queue_name(queue_name), exchange=DEAD_LETTER_EXCHANGE,
                 routing_key=queue_name, durable=True,
                 queue_arguments={"x-queue-type": "quorum"})


def declare_queue(conn: Connection, queue: Queue) -> None:
    """Declare the queue, its bindings and its dead-letter queue (idempotent)."""
    with conn.channel() as channel:
        dead_letter_queue(queue.name)(channel).declare()
        queue(channel).declare()


class Publisher:
    """Thread-safe publisher: a pool of producers over one connection, retried on broker loss."""

    def __init__(self, amqp_url: str):
        self._connection = connection(amqp_url)

    def publish(self, routing_key: str, body: dict[str, Any], message_id: str | None = None) -> None:
        with producers[self._connection].acquire(block=True, timeout=10) as producer:
            producer.publish(
                body, exchange=EXCHANGE, routing_key=routing_key, serializer="json",
                delivery_mode=2, message_id=message_id or str(uuid.uuid4()),
                declare=[EXCHANGE], retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        metrics.BUS_PUBLISHED.labels(routing_key).inc()

    def close(self) -> None:
        self._connection.release()


@dataclass(frozen=True)
class Delivery:
    routing_key: str
    redelivered: bool
    message_id: str | None


Handler = Callable[[dict[str, Any], Delivery], None]


def routing_key_of(message: kombu.Message) -> str:
    """The routing key the message was published with (a replayed dead letter carries it in a
    header, since it reaches its queue through the default exchange)."""
    headers = message.headers or {}
    replayed = headers.get(ORIGINAL_ROUTING_KEY_HEADER)
    if isinstance(replayed, bytes):
        replayed = replayed.decode("utf-8", "replace")
    return replayed if isinstance(replayed, str) and replayed else \
        message.delivery_info.get("routing_key", "")


def delivery_count(message: kombu.Message) -> int:
    """Earlier failed deliveries of this message (quorum queues' x-delivery-count)."""
    try:
        return int((message.headers or {}).get("x-delivery-count") or 0)
    except (TypeError, ValueError):
        return 0


class Worker(ConsumerMixin):
    """Consumes queues with one handler each; acks only after the handler returned.

    A handler raising PoisonMessage sends the message to the dead-letter queue at once; any
    other exception requeues it (after a pause, so a broken dependency does not spin) and
    RabbitMQ dead-letters it once DELIVERY_LIMIT is reached. ConsumerMixin reconnects after a
    broker restart; unacked messages of a dead consumer are redelivered by the broker.
    """

    def __init__(self, amqp_url: str, handlers: dict[str, tuple[Queue, Handler]],
                 prefetch: int = 16, requeue_pause: float = 1.0, transient_retry_for: float = 300.0,
                 queue_depth_interval: float = QUEUE_DEPTH_INTERVAL):
        self.connection = connection(amqp_url, heartbeat=0)
        self._handlers = handlers
        self._prefetch = prefetch
        self._requeue_pause = requeue_pause
        self._retrying = Retrying(retry=retry_if_exception_type(_transient_errors()),
                                  wait=wait_exponential(multiplier=0.2, max=10),
                                  stop=stop_after_delay(transient_retry_for), reraise=True,
                                  before_sleep=self._log_transient)
        self.ready = threading.Event()
        self._depths = QueueDepths(list(handlers), [dead_letter_queue_name(q) for q in handlers],
                                   queue_depth_interval)
        self._live: Connection | None = None

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        consumers = []
        for queue, handler in self._handlers.values():
            dead_letter_queue(queue.name)(channel).declare()
            consumers.append(Consumer(
                queues=[queue], callbacks=[self._callback(queue.name, handler)],
                accept=["json"], prefetch_count=self._prefetch,
                on_decode_error=self._on_decode_error))
        return consumers

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self._live = connection
        self.ready.set()
        log.info("consuming", extra={"queues": list(self._handlers)})

    def on_connection_error(self, exc, interval):
        self._live = None
        self.ready.clear()
        log.warning("broker connection lost, reconnecting",
                    extra={"error": str(exc), "retry_in": interval})

    def on_iteration(self) -> None:
        self._depths.measure(self._live)

    def _queue_of(self, message: kombu.Message) -> str:
        # Our queue's name is the routing key of its dead-letter binding, not of the message.
        queues = list(self._handlers)
        return queues[0] if len(queues) == 1 else message.delivery_info.get("routing_key", "")

    def _on_decode_error(self, message: kombu.Message, exc: Exception) -> None:
        queue_name = self._queue_of(message)
        log.error("undecodable message sent to dead-letter queue",
                  extra={"queue": queue_name, "error": str(exc),
                         "message_id": message.properties.get("message_id")})
        metrics.BUS_DEAD_LETTERED.labels(queue_name, "undecodable").inc()
        message.reject(requeue=False)

    def _callback(self, queue_name: str, handler: Handler):
        def on_message(body: Any, message: kombu.Message) -> None:
            info = message.delivery_info
            delivery = Delivery(routing_key=routing_key_of(message),
                                redelivered=bool(info.get("redelivered")),
                                message_id=message.properties.get("message_id"))
            if delivery.redelivered:
                metrics.BUS_REDELIVERED.labels(queue_name).inc()
            started = time.perf_counter()
            try:
                if not isinstance(body, dict):
                    raise PoisonMessage("message body is not a JSON object")
                self._retrying(handler, body, delivery)
            except PoisonMessage as exc:
                log.error("poison message sent to dead-letter queue",
                          extra={"queue": queue_name, "error": str(exc),
                                 "message_id": delivery.message_id,
                                 "routing_key": delivery.routing_key})
                metrics.BUS_FAILED.labels(queue_name).inc()
                metrics.BUS_DEAD_LETTERED.labels(queue_name, "poison").inc()
                message.reject(requeue=False)
            except Exception:
                metrics.BUS_FAILED.labels(queue_name).inc()
                last = delivery_count(message) >= DELIVERY_LIMIT
                if last:
                    # RabbitMQ dead-letters a message whose last allowed delivery is returned.
                    metrics.BUS_DEAD_LETTERED.labels(queue_name, "delivery_limit").inc()
                log.exception("handler failed; message sent to dead-letter queue (delivery limit "
                              "reached)" if last else "handler failed; message requeued",
                              extra={"queue": queue_name, "message_id": delivery.message_id,
                                     "routing_key": delivery.routing_key,
                                     "deliveries": delivery_count(message) + 1})
                time.sleep(self._requeue_pause)
                message.requeue()
            else:
                metrics.BUS_CONSUMED.labels(queue_name).inc()
                message.ack()
            finally:
                metrics.BUS_HANDLER_DURATION.labels(queue_name).observe(
                    time.perf_counter() - started)
        return on_message

    @staticmethod
    def _log_transient(state) -> None:
        log.warning("dependency unavailable; retrying the handler",
                    extra={"error": repr(state.outcome.exception())[:300],
                           "attempt": state.attempt_number})

    def stop(self) -> None:
        self.should_stop = True


BatchHandler = Callable[[list[dict[str, Any]]], None]


class BatchWorker(ConsumerMixin):
    """Consumes one queue in batches: messages collect for up to `max_wait` seconds or
    `max_batch` messages, then the handler gets all bodies at once and they are acked together
    (or all requeued if it raised). For work that is cheaper in bulk (pushes, SQL batches)."""

    def __init__(self, amqp_url: str, queue: Queue, handler: BatchHandler, max_batch: int = 500,
                 max_wait: float = 0.2, requeue_pause: float = 1.0,
                 queue_depth_interval: float = QUEUE_DEPTH_INTERVAL):
        self.connection = connection(amqp_url, heartbeat=0)
        self._queue = queue
        self._handler = handler
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._requeue_pause = requeue_pause
        self._pending: list[tuple[dict[str, Any], kombu.Message]] = []
        self._first_at = 0.0
        self.ready = threading.Event()
        self._depths = QueueDepths([queue.name], [dead_letter_queue_name(queue.name)],
                                   queue_depth_interval)
        self._live: Connection | None = None

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        dead_letter_queue(self._queue.name)(channel).declare()
        return [Consumer(queues=[self._queue], callbacks=[self._collect], accept=["json"],
                         prefetch_count=self._max_batch * 2,
                         on_decode_error=self._on_decode_error)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self._live = connection
        self.ready.set()

    def on_connection_error(self, exc, interval):
        # Unacked messages of the lost channel are redelivered by the broker.
        self._pending.clear()
        self._live = None
        self.ready.clear()
        log.warning("broker connection lost, reconnecting", extra={"error": str(exc)})

    def _on_decode_error(self, message: kombu.Message, exc: Exception) -> None:
        log.error("undecodable message sent to dead-letter queue",
                  extra={"queue": self._queue.name, "error": str(exc)})
        metrics.BUS_DEAD_LETTERED.labels(self._queue.name, "undecodable").inc()
        message.reject(requeue=False)

    def _collect(self, body: Any, message: kombu.Message) -> None:
        if message.delivery_info.get("redelivered"):
            metrics.BUS_REDELIVERED.labels(self._queue.name).inc()
        if not isinstance(body, dict):
            log.error("poison message sent to dead-letter queue",
                      extra={"queue": self._queue.name,
                             "message_id": message.properties.get("message_id")})
            metrics.BUS_DEAD_LETTERED.labels(self._queue.name, "poison").inc()
            message.reject(requeue=False)
            return
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append((body, message))
        if len(self._pending) >= self._max_batch:
            self._flush()

    def on_iteration(self) -> None:
        if self._pending and time.monotonic() - self._first_at >= self._max_wait:
            self._flush()
        self._depths.measure(self._live)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        queue_name = self._queue.name
        started = time.perf_counter()
        try:
            self._handler([body for body, _ in batch])
        except PoisonMessage as exc:
            log.error("poison batch sent to dead-letter queue",
                      extra={"queue": queue_name, "error": str(exc), "messages": len(batch)})
            metrics.BUS_FAILED.labels(queue_name).inc(len(batch))
            metrics.BUS_DEAD_LETTERED.labels(queue_name, "poison").inc(len(batch))
            for _, message in batch:
                message.reject(requeue=False)
        except Exception:
            metrics.BUS_FAILED.labels(queue_name).inc(len(batch))
            last = sum(delivery_count(m) >= DELIVERY_LIMIT for _, m in batch)
            if last:
                metrics.BUS_DEAD_LETTERED.labels(queue_name, "delivery_limit").inc(last)
            log.exception("batch handler failed; messages requeued",
                          extra={"queue": queue_name, "messages": len(batch),
                                 "dead_lettered_at_delivery_limit": last})
            time.sleep(self._requeue_pause)
            for _, message in batch:
                message.requeue()
        else:
            metrics.BUS_CONSUMED.labels(queue_name).inc(len(batch))
            for _, message in batch:
                message.ack()
        finally:
            metrics.BUS_HANDLER_DURATION.labels(queue_name).observe(time.perf_counter() - started)

    def run(self, **kwargs):  # noqa: D102
        return super().run(safety_interval=min(self._max_wait, 1.0), **kwargs)

    def stop(self) -> None:
        self.should_stop = True


def broker_reachable(amqp_url: str, timeout: float = 2.0) -> bool:
    try:
        with Connection(amqp_url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except (TimeoutError, OSError, kombu.exceptions.OperationalError, Exception):  # noqa: BLE001
        return False
