"""`mdmscep-dlq`: look at, replay or discard dead-lettered messages (docs/operations.md).

    mdmscep-dlq queues                              depth of every work queue and its .dlq
    mdmscep-dlq list QUEUE [--limit N] [--json]     what is in QUEUE.dlq (left in place)
    mdmscep-dlq show QUEUE --id ID                  one message: headers, death history, body
    mdmscep-dlq replay QUEUE (--id ID ... | --all)  send back to QUEUE, then remove from the .dlq
    mdmscep-dlq discard QUEUE (--id ID ... | --all) remove from the .dlq for good

Messages are read with basic.get and held unacknowledged; closing the channel returns the ones not
replayed or discarded to the dead-letter queue, in order. A replayed message goes to its original
queue only (not to every queue bound to its routing key), with the routing key it was first
published with in a header the consumers read (mdmscep_common.bus.routing_key_of), and is removed
from the dead-letter queue only after the broker confirmed the new copy. IDs are message ids (every
mdmscep publisher sets one), else `sha256:<first 16 hex digits of the body's digest>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kombu

from . import bus, work_queues
from .settings import DEFAULT_AMQP_URL

DEFAULT_LIMIT = 1000
_DEATH_HEADERS = ("x-death", "x-first-death-queue", "x-first-death-reason",
                  "x-first-death-exchange", "x-last-death-queue", "x-last-death-reason",
                  "x-last-death-exchange", "x-delivery-count")
REPLAYS_HEADER = "x-mdmscep-replays"


class DeadLetterError(Exception):
    """The queue does not exist, or a message cannot be replayed."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    """AMQP header values as JSON-friendly values."""
    if isinstance(value, dict):
        return {_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return _text(value)
    return value


@dataclass
class DeadLetter:
    id: str
    queue: str  # the work queue it died in
    routing_key: str  # as first published ("" when unknown)
    reason: str
    died_at: str
    deaths: int
    body: bytes = field(repr=False)
    headers: dict[str, Any] = field(default_factory=dict, repr=False)
    properties: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "queue": self.queue, "routing_key": self.routing_key,
                "reason": self.reason, "died_at": self.died_at, "deaths": self.deaths,
                "bytes": len(self.body)}

    def detail(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = _text(self.body)
        return {**self.summary(), "headers": _plain(self.headers),
                "content_type": self.properties.get("content_type"), "body": body}


def message_id(message: kombu.Message) -> str:
    return message.properties.get("message_id") or \
        "sha256:" + hashlib.sha256(message.body or b"").hexdigest()[:16]


def dead_letter(message: kombu.Message, queue: str) -> DeadLetter:
    headers = dict(message.headers or {})
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    ours = next((d for d in deaths if _text(d.get("queue", "")) == queue), deaths[0] if deaths else {})
    routing_key = _text(headers.get(bus.ORIGINAL_ROUTING_KEY_HEADER) or "")
    if not routing_key:
        keys = ours.get("routing-keys") or []
        routing_key = _text(keys[0]) if keys else ""
    died = ours.get("time")
    body = message.body if isinstance(message.body, bytes) else _text(message.body).encode()
    return DeadLetter(
        id=message_id(message), queue=queue, routing_key=routing_key,
        reason=_text(ours.get("reason") or headers.get("x-first-death-reason") or "unknown"),
        died_at=died.isoformat() if isinstance(died, datetime) else _text(died or ""),
        deaths=sum(int(d.get("count") or 1) for d in deaths) or 1,
        body=body, headers=headers, properties=dict(message.properties))


def work_queue_name(name: str) -> str:
    return name[:-len(".dlq")] if name.endswith(".dlq") else name


class DeadLetters:
    def __init__(self, amqp_url: str):
        self._amqp_url = amqp_url

    @contextmanager
    def _held(self, queue: str, limit: int) -> Iterator[tuple[kombu.Connection, list[kombu.Message]]]:
        """Up to `limit` messages of the queue's .dlq, unacknowledged until the block ends."""
        with bus.connection(self._amqp_url) as conn:
            channel = conn.channel()
            try:
                self._depth(channel, bus.dead_letter_queue_name(queue))
                dlq = kombu.Queue(bus.dead_letter_queue_name(queue), channel=channel, no_declare=True)
                held = []
                while len(held) < limit and (message := dlq.get(no_ack=False)) is not None:
                    held.append(message)
                yield conn, held
            finally:
                _close_quietly(channel)  # everything not acked goes back, in order

    @staticmethod
    def _depth(channel, name: str) -> int:
        try:
            return channel.queue_declare(queue=name, passive=True)[1]
        except conn_errors() as exc:
            raise DeadLetterError(f"queue {name} does not exist ({exc})") from None

    def depths(self, queues: tuple[str, ...] = work_queues.ALL) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        with bus.connection(self._amqp_url) as conn:
            for name in (n for q in queues for n in (q, bus.dead_letter_queue_name(q))):
                channel = conn.channel()
                try:
                    out[name] = self._depth(channel, name)
                except DeadLetterError:
                    out[name] = None
                finally:
                    _close_quietly(channel)
        return out

    def list(self, queue: str, limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
        queue = work_queue_name(queue)
        with self._held(queue, limit) as (_conn, held):
            return [dead_letter(m, queue) for m in held]

    def replay(self, queue: str, ids: list[str] | None = None, routing_key: str | None = None,
               limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
        """Send the chosen messages (all when `ids` is None) back to their queue; returns them."""
        queue = work_queue_name(queue)
        done = []
        with self._held(queue, limit) as (conn, held):
            chosen = [m for m in held if ids is None or message_id(m) in ids]
            out = conn.channel()
            try:
                self._depth(out, queue)  # the default exchange drops what has no queue
                producer = kombu.Producer(out)
                for message in chosen:
                    letter = dead_letter(message, queue)
                    key = routing_key or letter.routing_key
                    if not key:
                        raise DeadLetterError(f"message {letter.id} has no original routing key; "
                                              "give one with --routing-key")
                    producer.publish(
                        letter.body, exchange="", routing_key=queue, delivery_mode=2,
                        content_type=message.content_type or "application/json",
                        content_encoding=message.content_encoding or "utf-8",
                        message_id=letter.id, headers=self._replay_headers(letter, key))
                    message.ack()  # only after the broker confirmed the copy
                    done.append(letter)
            finally:
                _close_quietly(out)
        return done

    @staticmethod
    def _replay_headers(letter: DeadLetter, routing_key: str) -> dict[str, Any]:
        headers = {k: v for k, v in letter.headers.items() if k not in _DEATH_HEADERS}
        headers[bus.ORIGINAL_ROUTING_KEY_HEADER] = routing_key
        headers[REPLAYS_HEADER] = int(headers.get(REPLAYS_HEADER) or 0) + 1
        return headers

    def discard(self, queue: str, ids: list[str] | None = None,
                limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
        queue = work_queue_name(queue)
        done = []
        with self._held(queue, limit) as (_conn, held):
            for message in held:
                if ids is None or message_id(message) in ids:
                    done.append(dead_letter(message, queue))
                    message.ack()
        return done


def _close_quietly(channel) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001, S110 - the broker may have closed it already
        pass


def conn_errors() -> tuple[type[BaseException], ...]:
    import amqp

    return (amqp.exceptions.NotFound, amqp.exceptions.ChannelError)


# -- command line -------------------------------------------------------------------------------

def _print_table(letters: list[DeadLetter]) -> None:
    print(f"{'ID':<38} {'ROUTING KEY':<18} {'REASON':<15} {'DEATHS':>6} {'BYTES':>6}  DIED AT")
    for d in letters:
        print(f"{d.id:<38} {d.routing_key:<18} {d.reason:<15} {d.deaths:>6} {len(d.body):>6}  "
              f"{d.died_at}")


def _selection(args) -> list[str] | None:
    if args.all == bool(args.id):
        raise SystemExit("give --id ID (repeatable) or --all")
    return None if args.all else args.id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdmscep-dlq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL,
                        help="RabbitMQ URL [AMQP_URL]")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("queues", help="depth of every work queue and its dead-letter queue")
    for name, text in (("list", "list dead letters (they stay in place)"),
                       ("show", "show one dead letter in full"),
                       ("replay", "send dead letters back to their queue"),
                       ("discard", "delete dead letters")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("queue", help="the work queue (or its .dlq), e.g. "
                         f"{work_queues.PROFILE_PROCESSOR_EVENTS}")
        cmd.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help=f"messages to look at [{DEFAULT_LIMIT}]")
        if name == "list":
            cmd.add_argument("--json", action="store_true", help="one JSON document")
        elif name == "show":
            cmd.add_argument("--id", required=True)
        else:
            cmd.add_argument("--id", action="append", default=[], help="repeatable")
            cmd.add_argument("--all", action="store_true")
        if name == "replay":
            cmd.add_argument("--routing-key", help="for messages whose original key is unknown")
    args = parser.parse_args(argv)
    letters = DeadLetters(args.amqp_url)
    try:
        if args.command == "queues":
            for name, depth in letters.depths().items():
                print(f"{name:<40} {'(missing)' if depth is None else depth}")
        elif args.command == "list":
            found = letters.list(args.queue, args.limit)
            if args.json:
                print(json.dumps([d.detail() for d in found], indent=2))
            else:
                _print_table(found)
        elif args.command == "show":
            found = [d for d in letters.list(args.queue, args.limit) if d.id == args.id]
            if not found:
                print(f"no dead letter {args.id} in {work_queue_name(args.queue)}.dlq",
                      file=sys.stderr)
                return 1
            print(json.dumps(found[0].detail(), indent=2))
        else:
            ids = _selection(args)
            if args.command == "replay":
                done = letters.replay(args.queue, ids, args.routing_key, args.limit)
            else:
                done = letters.discard(args.queue, ids, args.limit)
            verb = "replayed" if args.command == "replay" else "discarded"
            for d in done:
                print(f"{verb} {d.id} ({d.routing_key or 'no routing key'})")
            missing = sorted(set(ids or []) - {d.id for d in done})
            if missing:
                print(f"not found: {', '.join(missing)}", file=sys.stderr)
                return 1
    except DeadLetterError as exc:
        print(f"mdmscep-dlq: {exc}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    raise SystemExit(main())
