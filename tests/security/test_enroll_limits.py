"""Guessing the enrollment secret is limited per client address (GET /mdm/enroll?secret=...).

Through the real mdm-endpoint app with a trusted proxy configured, on the real tables (the
counts live in enroll_failures, migration 0011) in a transaction rolled back after each test."""

from __future__ import annotations

import hmac

import pytest

from mdm_endpoint.app import create_app
from mdm_endpoint.enrollment import ENROLL_FAILURE_LIMIT, ENROLL_FAILURES_TABLE
from mdm_endpoint.identity import IdentityVerifier
from mdmscep_common.health import HealthChecks
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

ENROLL_SECRET = "s3cret-enroll-Lq7"
PROXY = "192.0.2.20"
LIMIT = ENROLL_FAILURE_LIMIT.burst
PROFILE_TYPE = "application/x-apple-aspen-config"


def _app(db, **env):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "IDENTITY_SCEP_URL": "http://identity.test/scep",
                              "IDENTITY_SCEP_CHALLENGE": "identity-challenge",
                              "TRUSTED_PROXIES": PROXY, **env})
    app = create_app(settings, db, RecordingPublisher(), HealthChecks({}),
                     verifier=IdentityVerifier([]))
    return app.test_client()


@pytest.fixture
def mdm(db):
    return _app(db, ENROLL_SECRET=ENROLL_SECRET)


def _enroll(client, secret, address, peer=PROXY):
    return client.get("/mdm/enroll", query_string={"secret": secret},
                      headers={"X-Forwarded-For": address}, environ_base={"REMOTE_ADDR": peer})


def test_wrong_secrets_are_limited_per_client(mdm):
    guesser = "203.0.113.40"
    statuses = [_enroll(mdm, f"guess{i}", guesser).status_code for i in range(LIMIT + 5)]
    assert statuses[:LIMIT] == [403] * LIMIT and set(statuses[LIMIT:]) == {429}
    refused = _enroll(mdm, "guess", guesser)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert ENROLL_SECRET not in refused.get_data(as_text=True)
    # Over its limit a client is refused before its secret is looked at: even the right one
    # (the operator's secret may be guessable; a client that knows it does not fail ten times).
    assert _enroll(mdm, ENROLL_SECRET, guesser).status_code == 429
    # Another client behind the same proxy enrolls.
    response = _enroll(mdm, ENROLL_SECRET, "198.51.100.41")
    assert response.status_code == 200 and response.mimetype == PROFILE_TYPE
    # A wrong secret from another client is its own first failure.
    assert _enroll(mdm, "typo", "198.51.100.42").status_code == 403


def test_the_count_is_shared_by_every_worker(db):
    workers = [_app(db, ENROLL_SECRET=ENROLL_SECRET) for _ in range(2)]
    guesser = "203.0.113.44"
    statuses = [_enroll(workers[i % 2], f"guess{i}", guesser).status_code for i in range(LIMIT)]
    assert statuses == [403] * LIMIT
    assert {_enroll(w, "guess", guesser).status_code for w in workers} == {429}


def test_forwarded_for_from_an_untrusted_peer_is_ignored(mdm, db_conn):
    peer = "203.0.113.45"
    statuses = [_enroll(mdm, f"guess{i}", f"198.51.100.{i}", peer=peer).status_code
                for i in range(LIMIT + 1)]
    assert statuses[-1] == 429
    counted = {r["client"]: r["failures"] for r in db_conn.execute(
        f"SELECT client, failures FROM {ENROLL_FAILURES_TABLE} "
        "WHERE client = %s OR client LIKE '198.51.100.%%'", (peer,))}
    assert list(counted) == [peer] and round(counted[peer]) == LIMIT


def test_the_secret_is_compared_in_constant_time_and_not_at_all_over_the_limit(mdm, monkeypatch):
    calls, real = [], hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    guesser = "203.0.113.46"
    for i in range(LIMIT):
        _enroll(mdm, f"guess{i}", guesser)
    assert calls == [(f"guess{i}".encode(), ENROLL_SECRET.encode()) for i in range(LIMIT)]
    calls.clear()
    assert _enroll(mdm, "guess", guesser).status_code == 429 and calls == []


def test_nothing_is_counted_while_enrollment_is_closed(db, db_conn):
    closed = _app(db)
    assert {_enroll(closed, f"guess{i}", "203.0.113.47").status_code
            for i in range(LIMIT + 2)} == {403}
    assert db_conn.execute(f"SELECT count(*) AS n FROM {ENROLL_FAILURES_TABLE} "
                           "WHERE client = '203.0.113.47'").fetchone()["n"] == 0
