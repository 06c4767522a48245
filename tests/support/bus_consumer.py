"""A consumer process for bus tests: records each message (and whether it was a redelivery) in a
file; with --hang it never returns from the handler, so the message stays unacked until killed."""

from __future__ import annotations

import argparse
import json
import threading

from mdmscep_common import bus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()

    def handle(body, delivery):
        with open(args.record, "a") as f:
            f.write(json.dumps({"body": body, "redelivered": delivery.redelivered}) + "\n")
        if args.hang:
            threading.Event().wait()

    queue = bus.durable_queue(args.queue, [args.routing_key])
    bus.Worker(args.amqp_url, {args.queue: (queue, handle)}, prefetch=1).run()


if __name__ == "__main__":
    main()
