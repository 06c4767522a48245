"""Rows written off the host's request path: a worker's thread takes what requests queued and
writes it in batches (what came while the last write ran goes in the next one). Used for the
outcome records (outcome_records.py) and the busy refusals of the per-CA limit (limits.py).

Adding never waits: past `max_pending` waiting items, or when a write fails (the database away),
the items are handed to `lost` and dropped. close writes what waits, then stops the thread; a
process killed meanwhile loses what was waiting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_STOP = object()
# Why items were lost (the reason handed to `lost`).
FULL = "too many waiting to be written"
WRITE_FAILED = "write failed"  # `lost` is then called while the exception is handled


class BatchWriter(Generic[T]):
    def __init__(self, name: str, write: Callable[[list[T]], None],
                 lost: Callable[[list[T], str], None], max_pending: int, per_batch: int):
        """`write(items)` writes one batch (an exception loses it); `lost(items, reason)` hears
        of items dropped (FULL or WRITE_FAILED)."""
        self._write = write
        self._lost = lost
        self._per_batch = per_batch
        self._pending: queue.Queue = queue.Queue(max_pending)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, item: T) -> None:
        try:
            self._pending.put_nowait(item)
        except queue.Full:
            self._lost([item], FULL)

    def flush(self) -> None:
        """Wait until everything added so far is written (or lost)."""
        self._pending.join()

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pending.put(_STOP, timeout=timeout)
        except queue.Full:
            return  # the thread is stuck on a write: it is a daemon, the process goes anyway
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < self._per_batch:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not _STOP]
            try:
                if items:
                    self._write(items)
            except Exception:  # noqa: BLE001 - the thread keeps going whatever a write meets
                self._lost(items, WRITE_FAILED)
            finally:
                for _ in batch:
                    self._pending.task_done()
            if len(items) < len(batch):
                return
