"""Adaptive issuance pacing (profile_processor/pacing.py) over the real ca_pacing table: the rate
rises while a CA answers fast and deliveries wait, within the admin's ceiling; it halves on a
failure or a slow answer, once per window, never under the floor; replicas handling answers at
once and a redelivered scep.result count each answer once. And the reconcile pass paces with it:
slots are reserved only a horizon ahead, the rest waits in the CA's queue, so a new rate applies
to deliveries already waiting.

Tests in the test's own transaction see one now() (PostgreSQL's transaction time): time passing is
played by moving ca_pacing's times back."""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mdmscep_common.ca_keys import challenge_context
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import SingleConnectionDatabase
from mdmscep_common.inbox import PROFILE_PROCESSOR_INBOX, Inbox
from profile_processor import pacing
from profile_processor.delivery import Reconciler
from profile_processor.delivery_directory import DeliveryDirectory
from profile_processor.pacing import IssuancePacing
from profile_processor.results import ResultHandler
from profile_processor.store import DeliveryStore
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.recording_publisher import RecordingCommander

SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()


def _ca(conn, name: str | None = None, concurrent: int = 4, ceiling: float | None = None,
        challenge: bytes = b"\x00") -> dict:
    name = name or f"Paced_{uuid.uuid4().hex[:8]}"
    ca_id = conn.execute(
        "INSERT INTO known_certificate_authorities (id, name, url, challenge_encrypted, "
        "max_concurrent_requests, max_issuance_per_second, updated_at) VALUES "
        "((SELECT COALESCE(max(id), 0) + 1 FROM known_certificate_authorities), %s, "
        "'http://ca.test/scep', %s, %s, %s, now()) RETURNING id",
        (name, challenge, concurrent, ceiling)).fetchone()["id"]
    return {"id": ca_id, "name": name}


def _answer(conn, ca, outcome="issued", latency_ms=5.0, slot_wait_ms=0.0, **event):
    return IssuancePacing().learn(conn, {
        "host_uuid": "H", "profile_uuid": "P", "ca_name": ca["name"], "outcome": outcome,
        "fail_info": "", "http_status": 200, "detail": "", "ca_unreachable": False,
        "code_sha256": "", "latency_ms": latency_ms, "slot_wait_ms": slot_wait_ms, **event})


def _rate(conn, ca) -> pacing.IssuanceRate:
    return IssuancePacing().rate_of(conn, ca["id"])


def _row(conn, ca) -> dict:
    return conn.execute("SELECT * FROM ca_pacing WHERE ca_id = %s", (ca["id"],)).fetchone()


def _deliveries_wait(conn, ca) -> None:
    """The pace is what holds the CA's deliveries back: slots are taken ahead of now."""
    conn.execute("INSERT INTO ca_pacing (ca_id) VALUES (%s) ON CONFLICT DO NOTHING", (ca["id"],))
    conn.execute("UPDATE ca_pacing SET next_slot_at = now() + interval '10 seconds' "
                 "WHERE ca_id = %s", (ca["id"],))


def _window_passed(conn, ca) -> None:
    conn.execute("UPDATE ca_pacing SET decreased_at = decreased_at - make_interval(secs => %s) "
                 "WHERE ca_id = %s", (pacing.DECREASE_WINDOW + 0.5, ca["id"]))


def _increased(rate: float, answers: int) -> float:
    for _ in range(answers):
        rate += pacing.STEP / rate
    return rate


# --- learning ---------------------------------------------------------------------------------

def test_fast_answers_raise_the_rate_while_deliveries_wait_never_above_the_ceiling(db_conn):
    ca = _ca(db_conn)
    start = _rate(db_conn, ca)
    assert (start.per_second, start.ceiling, start.reason, start.changed_at) == (20.0, None,
                                                                                 "start", None)
    # Nothing waits: the CA's answers say nothing about a higher rate.
    for _ in range(10):
        assert _answer(db_conn, ca) is None
    assert _rate(db_conn, ca).per_second == 20.0
    # Deliveries wait for their turn: a second's worth of fast answers adds about 1/s.
    _deliveries_wait(db_conn, ca)
    for _ in range(20):
        assert _answer(db_conn, ca) == "fast_answers"
    learned = _rate(db_conn, ca)
    assert learned.per_second == pytest.approx(_increased(20.0, 20))
    assert 20.9 < learned.per_second < 21.1
    assert learned.reason == "fast_answers" and learned.changed_at is not None
    # The admin's max_issuance_per_second is a ceiling: reached, never passed.
    db_conn.execute("UPDATE known_certificate_authorities SET max_issuance_per_second = 21.5 "
                    "WHERE id = %s", (ca["id"],))
    for _ in range(40):
        _answer(db_conn, ca)
    assert (_rate(db_conn, ca).per_second, _rate(db_conn, ca).ceiling) == (21.5, 21.5)
    # Lowered below the learned rate, it applies at once.
    db_conn.execute("UPDATE known_certificate_authorities SET max_issuance_per_second = 3 "
                    "WHERE id = %s", (ca["id"],))
    assert _rate(db_conn, ca).per_second == 3.0


def test_a_delivery_in_the_cas_queue_is_waiting_too(db_conn):
    """A reconcile pass late (a busy processor) leaves no slot ahead: the queue still waits."""
    ca = _ca(db_conn)
    assert _answer(db_conn, ca) is None
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, "
                    "profile_name) VALUES ('H-Q', 'P-Q', 'com.q', 'Q')")
    turn = db_conn.execute("SELECT now() + interval '5 seconds' AS t").fetchone()["t"]
    DeliveryStore().queue(db_conn, ca["id"], [("H-Q", "P-Q", turn, "waiting")], turn)
    assert _answer(db_conn, ca) == "fast_answers"


def test_the_rate_grows_only_while_the_cas_traffic_keeps_up_with_it(db_conn):
    """Hosts slower than the pace (a few answers per second at 20/s): a higher rate would be
    untried, and would hit the CA all at once when many hosts come."""
    ca = _ca(db_conn)
    _deliveries_wait(db_conn, ca)
    db_conn.execute("UPDATE ca_pacing SET answers_since = now() - interval '3 seconds', "
                    "answers = 4 WHERE ca_id = %s", (ca["id"],))
    for _ in range(10):
        assert _answer(db_conn, ca) is None  # the window closed at 4 answers in 3 s
    row = _row(db_conn, ca)
    assert row["answers_per_second"] == pytest.approx(4 / 3) and row["answers"] == 10
    assert _rate(db_conn, ca).per_second == 20.0
    # A window of 2 s with 32 answers: 16/s, over TESTED_SHARE of the rate: it grows again.
    db_conn.execute("UPDATE ca_pacing SET answers_since = now() - interval '2 seconds', "
                    "answers = 32 WHERE ca_id = %s", (ca["id"],))
    assert _answer(db_conn, ca) == "fast_answers"
    assert _row(db_conn, ca)["answers_per_second"] == pytest.approx(16.0)


def test_failures_halve_the_rate_once_per_window_down_to_the_floor(db_conn):
    ca = _ca(db_conn)
    assert _answer(db_conn, ca, "scep_failure", fail_info="badRequest") == "scep_failure"
    assert _rate(db_conn, ca).per_second == 10.0
    # The other answers of the same burst (sent before the decrease) change nothing more.
    assert _answer(db_conn, ca, "upstream_error", http_status=502) is None
    assert _answer(db_conn, ca, "timeout", latency_ms=None, http_status=504) is None
    assert (_rate(db_conn, ca).per_second, _rate(db_conn, ca).reason) == (10.0, "scep_failure")
    # A 4xx or a request held for approval says nothing of the CA's capacity.
    _window_passed(db_conn, ca)
    assert _answer(db_conn, ca, "upstream_error", http_status=404) is None
    assert _answer(db_conn, ca, "pending") is None
    assert _rate(db_conn, ca).per_second == 10.0
    for outcome, extra, reason, rate in [
            ("upstream_error", {"http_status": 502}, "server_error", 5.0),
            ("timeout", {"http_status": 504, "latency_ms": None}, "timeout", 2.5),
            ("upstream_error", {"http_status": 502, "ca_unreachable": True, "latency_ms": None},
             "unreachable", 1.25),
            ("scep_failure", {}, "scep_failure", 0.625),
            ("scep_failure", {}, "scep_failure", pacing.FLOOR_RATE)]:
        _window_passed(db_conn, ca)
        assert _answer(db_conn, ca, outcome, **extra) == reason
        assert (_rate(db_conn, ca).per_second, _rate(db_conn, ca).reason) == (rate, reason)
    _window_passed(db_conn, ca)
    assert _answer(db_conn, ca, "scep_failure") is None  # at the floor already
    assert _rate(db_conn, ca).per_second == pacing.FLOOR_RATE
    # A ceiling under the floor is the admin's call: kept.
    slow_ca = _ca(db_conn, ceiling=0.1)
    assert _answer(db_conn, slow_ca, "scep_failure") is None
    assert _rate(db_conn, slow_ca).per_second == 0.1


def test_answers_well_above_the_cas_normal_time_are_slow(db_conn):
    ca = _ca(db_conn)
    _deliveries_wait(db_conn, ca)
    for _ in range(30):
        _answer(db_conn, ca, latency_ms=40.0)
    assert _row(db_conn, ca)["baseline_ms"] == pytest.approx(40.0)
    # One answer that waited long (a burst at one slot) is no slow CA; nor are answers over
    # three times the normal but under SLOW_MIN_MS (jitter of a fast CA).
    assert _answer(db_conn, ca, latency_ms=40.0, slot_wait_ms=1200.0) == "fast_answers"
    for _ in range(30):
        assert _answer(db_conn, ca, latency_ms=200.0) == "fast_answers"
    for _ in range(30):
        _answer(db_conn, ca, latency_ms=40.0)
    risen = _rate(db_conn, ca).per_second
    normal = _row(db_conn, ca)["baseline_ms"]
    # The CA turns slow (0.4 s more each): within a few answers the rate is halved.
    reasons = [_answer(db_conn, ca, latency_ms=440.0) for _ in range(12)]
    assert "slow_answer" in reasons[:10], reasons
    slowed = reasons.index("slow_answer")
    assert _rate(db_conn, ca).per_second == pytest.approx(
        _increased(risen, slowed) * pacing.DECREASE_FACTOR)
    assert reasons[slowed + 1:] == [None] * (11 - slowed)  # one decrease per window
    # The normal hardly moves with slow answers (a CA slow for good becomes normal, slowly).
    assert normal < _row(db_conn, ca)["baseline_ms"] < normal + 15
    # An answer without a time (an older proxy) teaches nothing; nor does an unknown CA.
    assert _answer(db_conn, ca, latency_ms=None) is None
    assert _answer(db_conn, {"name": "Unknown_CA"}, "scep_failure") is None


def test_waits_for_the_cas_slots_at_the_proxy_count_as_slowness(db_conn):
    """A CA driven to its limit of concurrent requests: answers wait for a slot at the proxy."""
    ca = _ca(db_conn)
    for _ in range(30):
        _answer(db_conn, ca, latency_ms=40.0)
    reasons = [_answer(db_conn, ca, latency_ms=40.0, slot_wait_ms=400.0) for _ in range(10)]
    assert "slow_answer" in reasons, reasons
    assert _rate(db_conn, ca).per_second == 10.0


def test_the_rate_and_its_changes_are_metrics(db_conn):
    ca = _ca(db_conn)

    def changes(reason):
        return REGISTRY.get_sample_value("mdmscep_ca_issuance_rate_changes_total",
                                         {"ca": ca["name"], "reason": reason}) or 0.0

    _deliveries_wait(db_conn, ca)
    for _ in range(3):
        _answer(db_conn, ca)
    _answer(db_conn, ca, "upstream_error", http_status=502)
    _answer(db_conn, ca, "upstream_error", http_status=502)  # same window: no change
    assert (changes("fast_answers"), changes("server_error"), changes("slow_answer")) == (3, 1, 0)
    assert REGISTRY.get_sample_value("mdmscep_ca_issuance_rate", {"ca": ca["name"]}) == \
        pytest.approx(_rate(db_conn, ca).per_second)


def test_the_directory_tells_the_rate_and_forgets_a_deleted_cas(db_conn):
    from profile_processor.read_models import apply_config_change

    ca = _ca(db_conn, concurrent=2, ceiling=7.0)
    directory = DeliveryDirectory(SingleConnectionDatabase(db_conn))
    assert directory.issuance_rate(ca["id"]) == pacing.IssuanceRate(7.0, 7.0, "start", None)
    _answer(db_conn, ca, "scep_failure")
    assert directory.issuance_rate(ca["id"]).as_json()["per_second"] == 3.5
    apply_config_change(db_conn, {"kind": "certificate_authority", "action": "deleted",
                                  "id": ca["id"], "name": ca["name"], "resend": False,
                                  "certificate_authority": None, "sequence": 10**12})
    assert _row(db_conn, ca) is None


# --- replicas and redelivery (committed, as the processes run) ---------------------------------

@pytest.fixture
def committed_ca(mdm_db, clean_state):
    with mdm_db.transaction() as conn:
        ca = _ca(conn)
        _deliveries_wait(conn, ca)
    return ca


def _handle(db, body):
    """As the processor's consumer does (main.build): the work in the inbox's transaction."""
    handler = lambda tx: ResultHandler(tx, DeliveryStore(), None, 0.1).scep_result(body)  # noqa: E731
    return Inbox(db, PROFILE_PROCESSOR_INBOX).handle(body, handler)


def _event(ca, outcome="issued", **extra):
    return {"event_id": str(uuid.uuid4()), "host_uuid": f"H-{uuid.uuid4()}", "profile_uuid": "P",
            "ca_name": ca["name"], "outcome": outcome, "fail_info": "", "http_status": 200,
            "detail": "", "ca_unreachable": False, "code_sha256": "", "latency_ms": 5.0,
            "slot_wait_ms": 0.0, **extra}


def test_a_redelivered_scep_result_is_counted_once(mdm_db, committed_ca):
    event = _event(committed_ca)
    assert _handle(mdm_db, event) is True
    assert _handle(mdm_db, event) is False  # the inbox knew it
    failure = _event(committed_ca, "scep_failure")
    _handle(mdm_db, failure)
    with mdm_db.transaction() as conn:
        conn.execute("UPDATE ca_pacing SET decreased_at = now() - interval '1 hour'")
    _handle(mdm_db, failure)
    with mdm_db.transaction() as conn:
        assert _rate(conn, committed_ca).per_second == pytest.approx(_increased(20.0, 1) / 2)


def test_replicas_handling_answers_at_once_count_each_once(mdm_db, committed_ca):
    events = [_event(committed_ca) for _ in range(60)]
    failures = [_event(committed_ca, "upstream_error", http_status=502) for _ in range(6)]

    def replica(mine):
        for event in mine:
            _handle(mdm_db, event)

    threads = [threading.Thread(target=replica, args=(events[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with mdm_db.transaction() as conn:
        # Each increase applied to the rate the one before left: none lost.
        assert _rate(conn, committed_ca).per_second == pytest.approx(_increased(20.0, 60))
        risen = _rate(conn, committed_ca).per_second
    threads = [threading.Thread(target=replica, args=(failures[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with mdm_db.transaction() as conn:
        assert _rate(conn, committed_ca).per_second == pytest.approx(risen / 2)  # one window


# --- the reconcile pass paces with the learned rate ---------------------------------------------

@pytest.fixture
def fleet_of_100(db_conn):
    """100 enrolled hosts due for the seed's SCEP profile, its CA at 20/s (4 slots × 5)."""
    for table in ("host_profiles", "scep_codes", "known_profile_certificate_authorities",
                  "known_profiles", "enrolled_hosts", "ca_pacing"):
        db_conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
    box = SecretBox(SERVER_PRIVATE_KEY)
    ca = _ca(db_conn, name="Test_SCEP",
             challenge=box.encrypt("challenge", challenge_context("Test_SCEP")))
    db_conn.execute("INSERT INTO known_profiles (uuid, name, identifier, raw, checksum, "
                    "has_scep_payload) VALUES ('p-seed', 'SCEP', 'Fleet.custom.SCEP', %s, %s, "
                    "true)", (SEED, hashlib.sha256(SEED).digest()))
    db_conn.execute("INSERT INTO known_profile_certificate_authorities VALUES ('p-seed', %s)",
                    (ca["id"],))
    db_conn.execute("INSERT INTO enrolled_hosts SELECT 'H-' || lpad(n::text, 3, '0') "
                    "FROM generate_series(1, 100) n")
    commander = RecordingCommander()
    reconciler = Reconciler(SingleConnectionDatabase(db_conn), DeliveryStore(), commander, box,
                            "https://proxy.test", code_ttl=3600, verify_interval=3600)
    with db_conn.transaction():
        DeliveryStore().add_missing_deliveries(db_conn)
    return ca, reconciler, commander


def _states(conn) -> dict[str, int]:
    return {r["state"]: r["n"] for r in conn.execute(
        """SELECT CASE WHEN command_uuid IS NOT NULL THEN 'sent'
                       WHEN paced_until IS NOT NULL THEN 'slot'
                       WHEN queued_for_ca IS NOT NULL THEN 'queued' ELSE 'due' END AS state,
                  count(*) AS n FROM host_profiles GROUP BY 1""").fetchall()}


def _time_passes(conn, seconds: float) -> None:
    """What `seconds` do to the CA's pacing (now() itself stands still in this transaction)."""
    conn.execute("UPDATE ca_pacing SET next_slot_at = next_slot_at - make_interval(secs => %s), "
                 "queue_until = queue_until - make_interval(secs => %s)", (seconds, seconds))
    conn.execute("UPDATE host_profiles SET next_attempt_at = next_attempt_at "
                 "- make_interval(secs => %s), paced_until = paced_until "
                 "- make_interval(secs => %s) WHERE command_uuid IS NULL", (seconds, seconds))


def test_slots_are_reserved_a_horizon_ahead_and_the_rest_waits_in_the_cas_queue(db_conn,
                                                                                  fleet_of_100):
    ca, reconciler, commander = fleet_of_100
    assert reconciler.send_due(500) == 100
    # 2 s of slots at 20/s: those within PACING_GRACE (0.25 s) sent now, the others held; 60
    # queued.
    assert _states(db_conn) == {"sent": 6, "slot": 34, "queued": 60}
    assert len(commander.commands) == 6
    details = [r["detail"] for r in db_conn.execute(
        "SELECT detail FROM host_profiles WHERE queued_for_ca IS NOT NULL "
        "ORDER BY next_attempt_at").fetchall()]
    assert details[0] == ("Waiting for its turn at certificate authority Test_SCEP (about 2 s; "
                          "now 20 certificates/s, learned from its answers)")
    assert "(about 5 s;" in details[-1]
    # The admin's stats count them all as waiting.
    assert DeliveryDirectory(SingleConnectionDatabase(db_conn)).count(
        None, None, "Test_SCEP") == {"pending": 94}

    # The CA answered fast meanwhile: at 40/s, the queue is taken at 40/s, not at the 20/s
    # its estimates were made with.
    db_conn.execute("UPDATE ca_pacing SET per_second = 40")
    _time_passes(db_conn, 2.0)  # the held slots are due, the queued estimates not yet
    assert reconciler.send_due(500) == 34 + 60
    # The 34 held ones are sent (their slots came); then 2 s at 40/s = 80 slots for the queue.
    assert _states(db_conn) == {"sent": 6 + 34 + 11, "slot": 49}
    assert _row(db_conn, ca)["queue_until"] is None  # the queue is empty


def test_a_lower_rate_applies_to_the_queue_within_the_horizon(db_conn, fleet_of_100):
    ca, reconciler, commander = fleet_of_100
    reconciler.send_due(500)
    db_conn.execute("UPDATE ca_pacing SET per_second = 2")  # halved a few times: a failing CA
    _time_passes(db_conn, 2.0)
    reconciler.send_due(500)
    # The 34 held slots go, then 2 s at 2/s: 4 slots (one sent now), the rest still queued.
    assert _states(db_conn) == {"sent": 6 + 34 + 1, "slot": 3, "queued": 56}
    estimates = db_conn.execute(
        "SELECT min(next_attempt_at) - now() AS first, max(next_attempt_at) - now() AS last "
        "FROM host_profiles WHERE queued_for_ca IS NOT NULL").fetchone()
    # Queued before the decrease, their estimates are those of 20/s: they come due early, find
    # no slot, and wait again at the end of the queue, at 2/s.
    assert estimates["last"].total_seconds() < 4
    _time_passes(db_conn, 4.0)
    before = len(commander.commands)
    reconciler.send_due(500)
    assert len(commander.commands) - before == 3 + 1  # the 3 held, and the next slot at 2/s
    waiting = db_conn.execute("SELECT max(next_attempt_at) - now() AS last FROM host_profiles "
                              "WHERE queued_for_ca IS NOT NULL").fetchone()["last"]
    assert waiting.total_seconds() > 20  # re-estimated at 2/s
    assert "now 2 certificates/s" in db_conn.execute(
        "SELECT detail FROM host_profiles WHERE queued_for_ca IS NOT NULL LIMIT 1").fetchone()[
            "detail"]
