"""When the reconcile loop works out who should have what (profile_processor.main.ReconcileLoop):
the fleet-wide scope statements run after an event changed the read models, after a pass that
failed, and at least every interval; the passes that follow command results only send, renew
and verify."""

from __future__ import annotations

import threading

from profile_processor.main import ReconcileLoop
from tests.support.waiting import wait_for


class PassRecorder:
    """Stands in for the Reconciler: records each pass's `scopes`; fails the passes asked to."""

    def __init__(self, failing: int = 0):
        self.passes: list[bool] = []
        self._failing = failing

    def run_pass(self, scopes: bool = True) -> dict[str, int]:
        self.passes.append(scopes)
        if self._failing:
            self._failing -= 1
            raise RuntimeError("the database went away")
        return {}

    def seconds_until_due(self, ceiling: float) -> float:
        return ceiling


def _running(recorder: PassRecorder, interval: float) -> tuple[ReconcileLoop, threading.Thread]:
    loop = ReconcileLoop(recorder, interval)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return loop, thread


def _next_pass(loop: ReconcileLoop, recorder: PassRecorder, scopes_changed: bool = False) -> bool:
    before = len(recorder.passes)
    if scopes_changed:
        loop.scopes_changed()
    loop.trigger()
    wait_for(lambda: len(recorder.passes) > before, 10, "a pass")
    return recorder.passes[before]


def test_scopes_are_worked_out_first_then_only_after_events_that_change_them():
    recorder = PassRecorder()
    loop, thread = _running(recorder, interval=60)
    try:
        wait_for(lambda: recorder.passes, 10, "the first pass")
        assert recorder.passes == [True]  # at start: whatever changed while it was down
        assert _next_pass(loop, recorder) is False  # after a command.result
        assert _next_pass(loop, recorder, scopes_changed=True) is True  # after host.enrolled
        assert _next_pass(loop, recorder) is False
    finally:
        loop.stop()
        thread.join(10)


def test_scopes_are_worked_out_at_least_every_interval():
    recorder = PassRecorder()
    loop, thread = _running(recorder, interval=0.3)
    try:
        # Untriggered passes come every 0.3 s; each is at least 0.3 s after the last scope work.
        wait_for(lambda: len(recorder.passes) >= 4, 10, "four passes")
        assert all(recorder.passes[:4])
    finally:
        loop.stop()
        thread.join(10)


def test_a_failed_pass_works_the_scopes_out_again():
    recorder = PassRecorder(failing=1)
    loop, thread = _running(recorder, interval=60)
    try:
        wait_for(lambda: recorder.passes, 10, "the first pass")
        assert _next_pass(loop, recorder) is True  # the failed one's work is not lost
        assert _next_pass(loop, recorder) is False
    finally:
        loop.stop()
        thread.join(10)

