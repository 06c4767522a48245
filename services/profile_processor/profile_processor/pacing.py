"""Adaptive issuance pacing: how many SCEP deliveries per second a CA is sent, learned from its own
answers (scep.result) with additive increase and multiplicative decrease (AIMD), as TCP learns
a path's capacity.

- Start: the admin's max_issuance_per_second, else PER_SLOT_RATE per allowed concurrent request.
- Increase: each fast issued answer while the pacing holds deliveries back adds STEP / rate, so
  the rate grows by about STEP per second at full pace, never above max_issuance_per_second when
  the admin set one (a ceiling then). While nothing waits (no delivery in the CA's queue or
  holding a slot ahead: the pace is not what limits the CA's traffic), or while the CA's answers
  per second stay under TESTED_SHARE of the rate (hosts slower than the pace: the rate was never
  tried), answers prove nothing about a higher rate and it stays: a rate learned untested would
  hit the CA all at once when many hosts come.
- Decrease: the rate is halved (not under FLOOR_RATE) on a SCEP FAILURE, a 5xx, a timeout, an
  unreachable CA, or slow answers: the answers' recent time (at the CA plus the wait for one of
  the CA's slots at the proxy; a moving average over about the last 5) is over SLOW_FACTOR
  times the CA's normal (the same over about the last 50) and over SLOW_MIN_MS. Recent, not
  each: one answer that waited (two hosts at once for one slot, the proxy's polling for a slot
  of a busy CA) is no slow CA, and halving for it kept the rate far under what a CA took. At
  most one decrease per DECREASE_WINDOW: the answers to deliveries sent before a decrease come
  after it and would otherwise take the rate to the floor for one congestion.

The state is the CA's ca_pacing row, shared by every processor replica: the update is made with the
row locked, in the transaction of the scep.result (the inbox's), so a redelivered event is
counted once. Deliveries are paced with it by delivery.Reconciler (reserving slots at most
HORIZON ahead, so a new rate applies within that).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

PER_SLOT_RATE = 5.0  # the start: issuances per second per allowed concurrent request, when not set
FLOOR_RATE = 0.5  # never slower (unless the admin's ceiling is lower): a CA is still probed
MAX_RATE = 10_000.0  # the admin API's highest max_issuance_per_second
STEP = 1.0
DECREASE_FACTOR = 0.5
DECREASE_WINDOW = 2.0  # seconds: about the time from a send to the CA's answer
SLOW_FACTOR = 3.0
SLOW_MIN_MS = 250.0  # a faster answer is never slow (jitter, a short burst queued at a fast CA)
RECENT_WEIGHT = 0.2
# One answer moves the recent time by at most RECENT_WEIGHT of this many slow thresholds: an
# answer that waited seconds (the proxy polls for a busy CA's slot) is no trend of its own.
RECENT_CAP = 2.0
# The CA's normal moves with normal answers, and hardly with slow ones: a CA that became slower
# for good is, after several hundred answers, normal at its new speed.
BASELINE_WEIGHT = 0.02
SLOW_BASELINE_WEIGHT = 0.002
HORIZON = 2.0  # seconds of issuance slots reserved ahead
ANSWERS_WINDOW = 2.0  # seconds over which the CA's answers per second are counted
# The rate grows while the CA's answers per second are at least this share of it: it stays
# within a third above what the CA was seen to take.
TESTED_SHARE = 0.75

START = "start"
FAST_ANSWERS = "fast_answers"
SLOW_ANSWER = "slow_answer"
SCEP_FAILURE = "scep_failure"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"

ISSUANCE_RATE = Gauge("mdmscep_ca_issuance_rate", "Certificates per second the processor sends a "
                      "CA's deliveries at (learned from its answers), as this replica last set it",
                      ["ca"])
RATE_CHANGES = Counter("mdmscep_ca_issuance_rate_changes", "Changes of a CA's issuance rate, by "
                       "reason (fast_answers: increase; slow_answer, scep_failure, server_error, "
                       "timeout, unreachable: decrease)", ["ca", "reason"])


@dataclass(frozen=True)
class IssuanceRate:
    per_second: float
    ceiling: float | None  # the admin's max_issuance_per_second
    reason: str
    changed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"per_second": round(self.per_second, 3), "ceiling": self.ceiling,
                "reason": self.reason,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None}


def start_rate(ca: dict[str, Any]) -> float:
    return ca["max_issuance_per_second"] or PER_SLOT_RATE * ca["max_concurrent_requests"]


def current_rate(learned: float | None, ca: dict[str, Any]) -> float:
    """The rate to pace at: the learned one (the start until then), within the admin's ceiling."""
    rate = learned if learned is not None else start_rate(ca)
    ceiling = ca["max_issuance_per_second"]
    return min(max(rate, FLOOR_RATE), ceiling if ceiling else MAX_RATE)


def slots_within(start: datetime, now: datetime, rate: float) -> int:
    """Issuance slots from `start` on (one each 1/rate s) that begin within HORIZON of now: at
    least one while `start` is within it, so even a rate under 1/HORIZON moves on."""
    ahead = (now - start).total_seconds() + HORIZON
    return math.ceil(ahead * rate - 1e-9) if ahead > 0 else 0


def verdict(event: dict[str, Any]) -> str | None:
    """What a scep.result says of the CA: a decrease reason, "answered" (an issued certificate,
    fast or slow by its time), or None (a 4xx, a pending request: nothing about its capacity)."""
    if event.get("ca_unreachable") is True:
        return UNREACHABLE
    outcome = event.get("outcome")
    if outcome == "scep_failure":
        return SCEP_FAILURE
    if outcome == "timeout":
        return TIMEOUT
    if outcome == "upstream_error":
        status = event.get("http_status")
        return SERVER_ERROR if isinstance(status, int) and status >= 500 else None
    if outcome == "issued":
        return "answered"
    return None


def _count_answer(row: dict[str, Any]) -> tuple[datetime, int, float | None]:
    """The CA's answers counted with this one: (window start, answers in it, answers per second
    of the last whole window). An answer after ANSWERS_WINDOW closes the window and opens the
    next; after a quiet spell the closing window's figure is low, which holds increases back
    till the next one says otherwise."""
    since, answers, per_second = row["answers_since"], row["answers"], row["answers_per_second"]
    if since is not None and (row["now"] - since).total_seconds() < ANSWERS_WINDOW:
        return since, answers + 1, per_second
    if since is not None:
        per_second = answers / max((row["now"] - since).total_seconds(), 1e-3)
    return row["now"], 1, per_second


def _answer_ms(event: dict[str, Any]) -> float | None:
    latency, wait = event.get("latency_ms"), event.get("slot_wait_ms") or 0.0
    if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
        return None  # an event of an older proxy, or no answer: nothing to learn from its time
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        wait = 0.0
    return float(latency) + float(wait)


class IssuancePacing:
    """Learning (scep.result) and reading (admin stats) a CA's issuance rate."""

    def learn(self, conn: psycopg.Connection, event: dict[str, Any]) -> str | None:
        """Move the CA's rate by the answer `event` reports; returns the reason when it changed.
        Call it last in the event's transaction: it locks the CA's ca_pacing row till commit
        (the reconcile pass locks deliveries, then that row: never the other way round)."""
        what = verdict(event)
        ca_name = event.get("ca_name")
        if what is None or not isinstance(ca_name, str):
            return None
        ca = conn.execute("SELECT id, name, max_concurrent_requests, max_issuance_per_second "
                          "FROM known_certificate_authorities WHERE name = %s",
                          (ca_name,)).fetchone()
        if ca is None:
            return None  # deleted since
        conn.execute("INSERT INTO ca_pacing (ca_id) VALUES (%s) ON CONFLICT DO NOTHING", (ca["id"],))
        row = conn.execute(
            """SELECT per_second, baseline_ms, recent_ms,
                      next_slot_at > now() OR queue_until IS NOT NULL AS limiting,
                      decreased_at > now() - make_interval(secs => %s) AS decreased_lately,
                      answers_since, answers, answers_per_second, now() AS now
               FROM ca_pacing WHERE ca_id = %s FOR UPDATE""",
            (DECREASE_WINDOW, ca["id"])).fetchone()
        rate = current_rate(row["per_second"], ca)
        since, answers, per_second = _count_answer(row)
        reason, baseline, recent = what, row["baseline_ms"], row["recent_ms"]
        if what == "answered":
            took = _answer_ms(event)
            if took is None:
                reason = None  # counted, but without its time it tells nothing more
            elif baseline is None:
                baseline = recent = took
                reason = FAST_ANSWERS
            else:
                # The normal learns from answers near it: one far above moves it hardly, or a
                # CA turning slow would make its own slowness normal before the recent time
                # shows it.
                threshold = max(SLOW_FACTOR * baseline, SLOW_MIN_MS)
                far = took > threshold
                baseline += (SLOW_BASELINE_WEIGHT if far else BASELINE_WEIGHT) * (took - baseline)
                recent += RECENT_WEIGHT * (min(took, RECENT_CAP * threshold) - recent)
                slow = recent > max(SLOW_FACTOR * baseline, SLOW_MIN_MS)
                reason = SLOW_ANSWER if slow else FAST_ANSWERS
        if reason is None:
            new = rate
        elif reason == FAST_ANSWERS:
            tested = per_second is None or per_second >= TESTED_SHARE * rate
            ceiling = ca["max_issuance_per_second"] or MAX_RATE
            new = min(ceiling, rate + STEP / rate) if row["limiting"] and tested else rate
        elif row["decreased_lately"]:
            new = rate  # one decrease per window
        else:
            new = max(min(FLOOR_RATE, rate), rate * DECREASE_FACTOR)
        changed = new != rate
        conn.execute(
            """UPDATE ca_pacing SET baseline_ms = %(baseline)s, recent_ms = %(recent)s,
                      answers_since = %(since)s,
                      answers = %(answers)s, answers_per_second = %(answered)s,
                      per_second = CASE WHEN %(changed)s THEN %(new)s ELSE per_second END,
                      reason = CASE WHEN %(changed)s THEN %(reason)s ELSE reason END,
                      changed_at = CASE WHEN %(changed)s THEN now() ELSE changed_at END,
                      decreased_at = CASE WHEN %(changed)s AND %(decrease)s THEN now()
                                          ELSE decreased_at END
               WHERE ca_id = %(ca)s""",
            {"baseline": baseline, "recent": recent, "since": since, "answers": answers,
             "answered": per_second, "changed": changed, "new": new, "reason": reason,
             "decrease": reason != FAST_ANSWERS, "ca": ca["id"]})
        if not changed:
            return None
        ISSUANCE_RATE.labels(ca["name"]).set(new)
        RATE_CHANGES.labels(ca["name"], reason).inc()
        if reason != FAST_ANSWERS:
            log.info("issuance rate decreased", extra={"ca": ca["name"], "reason": reason,
                                                       "per_second": round(new, 3)})
        return reason

    def rate_of(self, conn: psycopg.Connection, ca_id: int) -> IssuanceRate | None:
        """The CA's rate now (its start rate until its answers changed it); None: unknown CA."""
        row = conn.execute(
            """SELECT ca.max_concurrent_requests, ca.max_issuance_per_second, p.per_second,
                      COALESCE(p.reason, 'start') AS reason, p.changed_at
               FROM known_certificate_authorities ca LEFT JOIN ca_pacing p ON p.ca_id = ca.id
               WHERE ca.id = %s""", (ca_id,)).fetchone()
        if row is None:
            return None
        return IssuanceRate(current_rate(row["per_second"], row), row["max_issuance_per_second"],
                            row["reason"], row["changed_at"])
