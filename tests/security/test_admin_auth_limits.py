"""Failed admin-token checks are limited per client without ever locking an admin out.

Through the real admin app behind a configured trusted proxy (TRUSTED_PROXIES), with the counts
in PostgreSQL (admin_auth_failures, migration 0011): two app instances, each with its own
connection pool on the same database, stand for two gunicorn workers or two replicas. The
rows are committed, so each test starts and ends with an empty table."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from admin_config.app import build_services, create_app
from admin_config.auth import ADMIN_AUTH_FAILURE_LIMIT, ADMIN_AUTH_FAILURES_TABLE, new_token, token_hash
from admin_config.store import ApiTokenStore
from mdmscep_common.db import Database
from mdmscep_common.failure_limits import PRUNE_PER_FAILURE, FailureLimiter
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber
from tests.support.owner_doubles import row_owners
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

PROXY = "192.0.2.10"  # the load balancer every request comes through
HOSTS = "/api/v1/fleet/hosts"
LIMIT = ADMIN_AUTH_FAILURE_LIMIT.burst


def _truncate(db):
    with db.transaction() as conn:
        conn.execute(f"TRUNCATE {ADMIN_AUTH_FAILURES_TABLE}")


@pytest.fixture
def pools(database_url):
    made = [Database(database_url, max_size=4, name=f"tests-admin-{i}").open() for i in range(2)]
    _truncate(made[0])
    yield made
    _truncate(made[0])
    for db in made:
        db.close()


class Instance:
    """One admin-config process: its own app and connection pool."""

    def __init__(self, db):
        settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                                  "ADMIN_API_TOKEN": ADMIN_TOKEN,
                                  "TRUSTED_PROXIES": f"{PROXY}, 10.0.0.0/8"})
        services = build_services(settings, db, NoProber(), RecordingPublisher(),
                                  **row_owners(db))
        self.client = create_app(services, HealthChecks({})).test_client()

    def get(self, token: str, client: str | None = None, peer: str = PROXY):
        """GET /hosts as `client` behind the proxy (or straight from `peer` when None)."""
        headers = {"Authorization": f"Bearer {token}"}
        if client is not None:
            headers["X-Forwarded-For"] = client
        return self.client.get(HOSTS, headers=headers, environ_base={"REMOTE_ADDR": peer})


@pytest.fixture
def instances(pools):
    return [Instance(db) for db in pools]


def _failures(db, client):
    with db.transaction() as conn:
        row = conn.execute(f"SELECT failures FROM {ADMIN_AUTH_FAILURES_TABLE} WHERE client = %s",
                           (client,)).fetchone()
    return row["failures"] if row else 0


def test_failures_of_many_clients_behind_one_proxy_do_not_lock_out_another(instances, pools):
    admin = instances[0]
    # 30 clients, 5 wrong tokens each: 150 failures through one proxy address.
    statuses = {admin.get(f"guess-{c}-{i}", f"198.51.100.{c}").status_code
                for c in range(1, 31) for i in range(5)}
    assert statuses == {401}
    # Another client behind the same proxy is not held back, failing or not.
    assert admin.get("another-guess", "198.51.100.200").status_code == 401
    assert admin.get(ADMIN_TOKEN, "198.51.100.201").status_code == 200
    # Counted per client (the first address a trusted proxy did not add), not per proxy.
    assert round(_failures(pools[0], "198.51.100.7")) == 5
    assert _failures(pools[0], PROXY) == 0


def test_a_valid_token_from_a_client_over_its_limit_is_accepted(instances, pools):
    admin, guesser = instances[0], "203.0.113.66"
    statuses = [admin.get(f"guess{i}", guesser).status_code for i in range(LIMIT + 5)]
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}
    over = admin.get("one-more-guess", guesser)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    assert ADMIN_TOKEN not in over.get_data(as_text=True)
    # The bootstrap token and a created token still work from that very address.
    assert admin.get(ADMIN_TOKEN, guesser).status_code == 200
    created = new_token()
    with pools[0].transaction() as conn:
        ApiTokenStore().create(conn, "ops", token_hash(created), "observer")
    try:
        response = admin.get(created, guesser)
        assert response.status_code == 200 and "hosts" in response.json
    finally:
        with pools[0].transaction() as conn:
            conn.execute("DELETE FROM api_tokens WHERE name = 'ops'")
    # A success does not reset the count: failures from there are still refused.
    assert admin.get("guess-after", guesser).status_code == 429


def test_failures_counted_by_one_instance_are_seen_by_another(instances):
    first, second = instances
    client = "203.0.113.77"
    # Half the allowance on each instance (as gunicorn spreads requests over its workers)…
    assert [first.get(f"a{i}", client).status_code for i in range(LIMIT // 2)] == \
        [401] * (LIMIT // 2)
    assert [second.get(f"b{i}", client).status_code for i in range(LIMIT - LIMIT // 2)] == \
        [401] * (LIMIT - LIMIT // 2)
    # …and the next failure is over the limit on either.
    assert first.get("c", client).status_code == 429
    assert second.get("d", client).status_code == 429


def test_concurrent_failures_on_two_instances_are_counted_exactly(instances):
    client, attempts = "203.0.113.88", 3 * LIMIT
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: instances[i % 2].get(f"race{i}", client).status_code,
                                 range(attempts)))
    elapsed = time.monotonic() - started
    # Each failure is one atomic upsert: exactly LIMIT get 401 (plus any that the decay of one
    # failure per refill period allowed while the requests ran).
    allowed = LIMIT + int(elapsed / ADMIN_AUTH_FAILURE_LIMIT.refill_seconds)
    assert LIMIT <= statuses.count(401) <= allowed, (statuses.count(401), elapsed)
    assert statuses.count(401) + statuses.count(429) == attempts


def test_forwarded_for_from_an_untrusted_peer_is_ignored(instances, pools):
    admin, peer, victim = instances[0], "203.0.113.99", "198.51.100.55"
    # Rotating X-Forwarded-For from a peer that is not a trusted proxy does not escape the limit…
    statuses = [admin.get(f"guess{i}", f"198.51.100.{i}", peer=peer).status_code
                for i in range(LIMIT + 3)]
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}
    assert round(_failures(pools[0], peer)) == LIMIT + 3
    # …nor does it charge its failures to the address it names.
    for i in range(LIMIT + 3):
        admin.get(f"frame{i}", victim, peer="203.0.113.100")
    assert _failures(pools[0], victim) == 0
    assert admin.get("honest-mistake", victim).status_code == 401


def test_a_forged_forwarded_for_line_before_the_proxys_own_is_not_believed(instances):
    admin, client = instances[0], "198.51.100.60"

    def guess(i):
        # The client's own header line (a new address each time), then the one the proxy added.
        headers = [("Authorization", f"Bearer guess{i}"),
                   ("X-Forwarded-For", f"203.0.113.{i + 1}"), ("X-Forwarded-For", client)]
        return admin.client.get(HOSTS, headers=headers,
                                environ_base={"REMOTE_ADDR": PROXY}).status_code

    statuses = [guess(i) for i in range(LIMIT + 2)]
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}


def test_an_ipv6_client_is_counted_by_its_64_network(instances):
    admin = instances[0]
    # A fresh address from its /64 for every guess does not escape the limit…
    statuses = [admin.get(f"guess{i}", f"2001:db8:1:2::{i + 1:x}").status_code
                for i in range(LIMIT + 2)]
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}
    # …and the next /64 is another client.
    assert admin.get("guess", "2001:db8:1:3::1").status_code == 401


def test_rows_of_clients_that_stopped_failing_are_deleted_by_later_failures(pools):
    limiter = FailureLimiter(pools[0], ADMIN_AUTH_FAILURES_TABLE, ADMIN_AUTH_FAILURE_LIMIT)
    stale = 3 * PRUNE_PER_FAILURE
    with pools[0].transaction() as conn:
        conn.execute(f"INSERT INTO {ADMIN_AUTH_FAILURES_TABLE} (client, failures, updated_at) "
                     "SELECT '100.64.0.' || n, 20, now() - interval '1 hour' "
                     "FROM generate_series(1, %s) n", (stale,))
        # Still counting: failed a moment ago.
        conn.execute(f"INSERT INTO {ADMIN_AUTH_FAILURES_TABLE} (client, failures) "
                     "VALUES ('100.64.1.1', 20)")

    def rows():
        with pools[0].transaction() as conn:
            return conn.execute(f"SELECT count(*) AS n FROM {ADMIN_AUTH_FAILURES_TABLE}"
                                ).fetchone()["n"]

    limiter.failed("100.64.2.1")
    assert rows() == stale + 2 - PRUNE_PER_FAILURE
    for _ in range(3):
        limiter.failed("100.64.2.1")
    assert rows() == 2  # the recent one and the client that just failed
    assert limiter.retry_after("100.64.1.1") > 0
