"""Admin API tokens: compared in constant time, stored hashed, refused without echo, and failed
token checks limited per client (more in test_admin_auth_limits.py).

Plus a source scan: no `==`/`!=` between a secret and a value an attacker controls anywhere in
services/ (hmac.compare_digest or a digest lookup instead); the reviewed exceptions are listed."""

from __future__ import annotations

import ast
import hmac
import re
from pathlib import Path

import pytest

from admin_config import auth
from admin_config.app import build_services, create_app
from admin_config.store import ApiTokenStore
from mdmscep_common.health import HealthChecks
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.admin_doubles import NoProber
from tests.support.owner_doubles import row_owners
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin(db):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    services = build_services(settings, db, NoProber(), RecordingPublisher(), **row_owners(db))
    return create_app(services, HealthChecks({})).test_client()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic " + ADMIN_TOKEN,
                                    "Bearer " + ADMIN_TOKEN + "x", "Bearer " + ADMIN_TOKEN[:-1],
                                    "Bearer mdmscep_" + "A" * 43, "bearer\t" + "x"])
def test_wrong_or_missing_tokens_get_401_without_echo(admin, header):
    headers = {"Authorization": header} if header is not None else {}
    response = admin.get("/api/v1/fleet/hosts", headers=headers)
    assert response.status_code == 401
    body = response.get_data(as_text=True)
    presented = (header or "").partition(" ")[2]
    assert ADMIN_TOKEN not in body and (len(presented) < 6 or presented not in body)


def test_the_bootstrap_token_is_compared_in_constant_time(admin, monkeypatch):
    calls, real = [], hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    assert admin.get("/api/v1/fleet/hosts",
                     headers={"Authorization": "Bearer guess"}).status_code == 401
    assert calls == [(b"guess", ADMIN_TOKEN.encode())]


def test_other_tokens_are_looked_up_by_sha256_only(admin, monkeypatch):
    looked_up = []
    real = ApiTokenStore.find_active

    def recording(self, conn, token_sha256):
        looked_up.append(token_sha256)
        return real(self, conn, token_sha256)

    monkeypatch.setattr(ApiTokenStore, "find_active", recording)
    admin.get("/api/v1/fleet/hosts", headers={"Authorization": "Bearer mdmscep_guess"})
    assert looked_up == [auth.token_hash("mdmscep_guess")] and len(looked_up[0]) == 32


def test_tokens_are_stored_as_sha256_only(db_conn):
    columns = {r["column_name"] for r in db_conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'api_tokens'")}
    assert "token_sha256" in columns and not columns & {"token", "secret", "value"}


def test_new_tokens_carry_256_random_bits():
    tokens = {auth.new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(t.startswith(auth.TOKEN_PREFIX) and len(t) >= len(auth.TOKEN_PREFIX) + 43
               for t in tokens)


def test_the_bootstrap_token_is_an_admin_and_a_tokens_role_is_read_at_each_call(admin, db_conn):
    bootstrap = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = admin.post("/api/v1/fleet/api_tokens", headers=bootstrap,
                      json={"name": "ops", "role": "admin"})
    assert made.status_code == 200 and made.json["role"] == "admin"
    ops = {"Authorization": f"Bearer {made.json['token']}"}
    assert admin.get("/api/v1/fleet/api_tokens", headers=ops).status_code == 200
    # No role is kept between calls: a demotion applies to the very next one.
    db_conn.execute("UPDATE api_tokens SET role = 'observer' WHERE name = 'ops'")
    refused = admin.post("/api/v1/fleet/api_tokens", headers=ops, json={"name": "mine"})
    assert refused.status_code == 403 and "needs the admin role" in refused.json["message"]
    assert made.json["token"] not in refused.get_data(as_text=True)


FAILED_LIMIT = 10


# Failed token checks are counted per client address (admin_config/auth.py); past the limit a
# failing check gets 429 with Retry-After. A valid token is never refused, from any client.
def test_failed_token_checks_are_limited_per_client(admin):
    statuses = [admin.get("/api/v1/fleet/hosts", headers={"Authorization": f"Bearer guess{i}"},
                          environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code
                for i in range(FAILED_LIMIT + 5)]
    assert statuses[:FAILED_LIMIT] == [401] * FAILED_LIMIT
    assert set(statuses[FAILED_LIMIT:]) == {429}
    # Another client, and the right token from any client, are not held back.
    for address in ("198.51.100.1", "203.0.113.7"):
        assert admin.get("/api/v1/fleet/hosts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         environ_base={"REMOTE_ADDR": address}).status_code == 200


# --- no plain comparison of secrets in the services -------------------------------------------

SECRET_NAME = re.compile(r"(token|secret|challenge|password|passwd|one_time_code|\bcode\b|"
                         r"digest|signature|key)", re.I)
# Reviewed: each compares public data, constants, or values the caller already holds.
REVIEWED = {
    "mdm_endpoint/identity.py": {"cert.key_identifier == sid.chosen.native"},  # public ids
    "scep_proxy/proxy.py": {"key[0] == ca_name"},  # cache keys (CA names)
    "scep_proxy/profile_authority_client.py": {"key[0].ca_name == ca_name"},  # cache keys (CA names)
    "scep_proxy/outcome_metrics.py": {"routing_key == bus.SCEP_RESULT"},
    "profile_processor/main.py": {"key == bus.COMMAND_RESULT", "key == bus.SCEP_RESULT",
                                  "key == bus.DELIVERY_RESEND", "key == bus.HOST_CHECKED_OUT",
                                  "key == bus.CONFIG_CHANGED", "key == bus.HOST_ENROLLED",
                                  "key != bus.HOST_ENROLLED"},
    "profile_processor/read_models.py": {"routing_key == bus.HOST_ENROLLED",
                                         "routing_key == bus.HOST_FACTS_CHANGED"},  # routing keys
    "admin_config/gitops.py": {"seen.setdefault(name, key) != key"},  # label rule field names
    "admin_config/owner_client.py": {"code == grpc.StatusCode.NOT_FOUND",
                                     "exc.code() != grpc.StatusCode.UNAVAILABLE"},  # status codes
    "admin_config/certificate_authorities.py": {
        "challenge == MASKED_CHALLENGE",  # the public mask "********"
        # An admin's PATCH against the stored challenge: the caller is authenticated and a
        # differing value replaces the secret, so timing cannot reveal it (compare_digest
        # would still be tidier).
        "new_challenge != old_challenge"},
    "admin_config/profile_validation.py": {"challenge_ca != url_ca"},  # CA names in a profile
    # A service's own key against its certificate, at start-up: public keys.
    "mdmscep_common/service_tls.py": {"key.public_key() != certificate.public_key()"},
}


def test_no_secret_is_compared_with_eq():
    found = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        if "/mdmscep/v1/" in str(path):
            continue
        source = path.read_text()
        relative = str(path.relative_to(ROOT / "services")).split("/", 1)[1]
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare) or not any(
                    isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) for side in sides):
                continue
            if not any(SECRET_NAME.search(ast.get_source_segment(source, s) or "") for s in sides):
                continue
            text = ast.get_source_segment(source, node)
            if text not in REVIEWED.get(relative, set()):
                found.append(f"{relative}:{node.lineno}: {text}")
    assert not found, "compare secrets with hmac.compare_digest (or review and list): " + \
        "; ".join(found)
