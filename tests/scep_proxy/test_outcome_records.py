"""scep-proxy's outcome records (scep_proxy/outcome_records.py) are written off the host's
request path: recording returns at once, a thread writes them, the outcomes that came meanwhile
share one transaction, and close writes what waits. (With the real database and the outbox
relay: tests/scep_proxy/test_scep_proxy.py, test_scep_result_reaches_the_bus_through_the_outbox.)"""

from __future__ import annotations

import contextlib
import threading

from scep_proxy.outcome_records import OutcomeStore
from scep_proxy.outcomes import ScepOutcome
from tests.support.recording_publisher import RecordingPublisher


class HeldDatabase:
    """A database whose transactions wait until released; records their statements'
    parameters."""

    def __init__(self):
        self.waiting, self.release = threading.Event(), threading.Event()
        self.transactions: list[list[tuple]] = []

    @contextlib.contextmanager
    def transaction(self):
        self.waiting.set()
        assert self.release.wait(10), "the test never released the database"
        self.transactions.append([])
        yield self

    def execute(self, statement, params=None):
        self.transactions[-1].append(params)


def _outcome(n: int) -> ScepOutcome:
    return ScepOutcome(f"HOST-{n}", "PROFILE", "CA", "issued", "", 200, "issued")


def test_recording_does_not_wait_for_the_database_and_batches_what_came_meanwhile():
    db, events = HeldDatabase(), RecordingPublisher()
    store = OutcomeStore(db, events)
    try:
        store.record(_outcome(0), 12.5)
        assert db.waiting.wait(10)  # the writer is in its transaction, held by the database
        store.record(_outcome(1), 12.5)  # returns at once all the same
        store.record(_outcome(2), 12.5)
        assert events.messages == [] and db.transactions == []
        db.release.set()
        store.flush()
        assert [body["host_uuid"] for _, body in events.messages] == ["HOST-0", "HOST-1", "HOST-2"]
        # The first transaction took the first outcome; the two that came while it waited
        # share the next one (one ca_requests statement each, with a row per request that
        # reached the CA).
        rows = [[list(zip(*params, strict=True)) for params in t] for t in db.transactions]
        assert rows == [[[("CA", "issued", 12.5)]], [[("CA", "issued", 12.5)] * 2]]
    finally:
        db.release.set()
        store.close()


def test_close_writes_what_waits():
    db, events = HeldDatabase(), RecordingPublisher()
    store = OutcomeStore(db, events)
    store.record(_outcome(0), None)  # never reached the CA: the event, no ca_requests row
    db.release.set()
    store.close()
    assert [key for key, _ in events.messages] == ["scep.result"]
    assert db.transactions == [[]]
