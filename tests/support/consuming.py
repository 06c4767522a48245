"""Bus consumers that tests run in a thread of their own."""

from __future__ import annotations

import threading

from mdmscep_common import bus

# How long a consumer waits for a message before it looks at its stop flag again. kombu's
# default is 1 s: every test that stopped a consumer waited up to a second in its teardown.
STOP_CHECK_SECONDS = 0.1


def consume_in_thread(worker: bus.Worker, ready_within: float = 10) -> threading.Thread:
    """Run `worker` in a daemon thread; returns the thread once the worker consumes."""
    thread = threading.Thread(target=worker.run, kwargs={"safety_interval": STOP_CHECK_SECONDS},
                              daemon=True)
    thread.start()
    assert worker.ready.wait(ready_within)
    return thread
