"""Roles of admin API tokens (admin_config/roles.py): observer reads, maintainer also changes
profiles, admin does everything. Every route of the admin API is called here by a token of each
role: a call within the role does what it does, with the token's name as actor; a call beyond it
is a 403 naming the role it needs and changes nothing (no row anywhere, no activity, no event).
The calls cover every route the API declares (a new route fails
test_every_route_is_called_by_every_role until it is listed here)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import jsonify

from admin_config.api import routes
from admin_config.roles import ADMIN, MAINTAINER, OBSERVER, ROLES, allows
from tests.support.service_fixtures import AdminClient, create_ca

API = "/api/v1/fleet"
SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
OTHER = SEED.replace(b"Fleet.custom.SCEP", b"Fleet.other.SCEP").replace(
    b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC", b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDD")
RENAMED = SEED.replace(b"<string>SCEP proxy cert</string>", b"<string>SCEP proxy cert v2</string>")
SCHEMAS = ("public", "admin_config", "mdm_endpoint", "profile_processor", "scep_proxy")


def _upload(raw: bytes) -> dict[str, Any]:
    return {"data": {"profile": (io.BytesIO(raw), "profile.mobileconfig")},
            "content_type": "multipart/form-data"}


@pytest.fixture
def world(admin, custom_ca, db_conn):
    """A CA the seed profile uses and a spare one, the seed profile, host H-A whose delivery of
    it failed, host H-GONE with none, and a spare observer token: something for every route."""
    ca = create_ca(admin, "Test_SCEP", custom_ca.url, "custom-ca-challenge")
    spare = create_ca(admin, "Spare_CA", custom_ca.url, "custom-ca-challenge")
    assert ca.status_code == 200 and spare.status_code == 200, (ca.json, spare.json)
    uploaded = admin.post(f"{API}/configuration_profiles", **_upload(SEED))
    assert uploaded.status_code == 200, uploaded.json
    profile = uploaded.json["profile_uuid"]
    db_conn.execute("INSERT INTO hosts (uuid, serial_number, enrolled) VALUES "
                    "('H-A', 'C02AAA', true), ('H-GONE', 'C02GONE', true)")
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, profile_name, "
                    "operation_type, status, detail) VALUES ('H-A', %s, 'Fleet.custom.SCEP', "
                    "'SCEP proxy cert', 'install', 'failed', 'The disk is full')", (profile,))
    assert admin.post(f"{API}/api_tokens", json={"name": "spare"}).status_code == 200
    team = admin.post(f"{API}/teams", json={"name": "Spare team"})
    label = admin.post(f"{API}/labels", json={"name": "Spare label", "hosts": ["H-A"]})
    assert team.status_code == 200 and label.status_code == 200, (team.json, label.json)
    return {"ca": ca.json["id"], "spare_ca": spare.json["id"], "profile": profile,
            "ca_url": custom_ca.url, "team": team.json["team"]["id"],
            "label": label.json["label"]["id"]}


@pytest.fixture
def tokens(admin, admin_app):
    """An AdminClient per role, each with a token of that role made by the bootstrap token."""
    clients = {}
    for role in ROLES:
        created = admin.post(f"{API}/api_tokens", json={"name": f"{role}-bot", "role": role})
        assert created.status_code == 200 and created.json["role"] == role, created.json
        clients[role] = AdminClient(admin_app.test_client(), created.json["token"])
    return clients


# (method, path, body, status when allowed). Paths and bodies are filled from `world`.
CALLS: list[tuple[str, str, Any, int]] = [
    ("GET", "/certificate_authorities", None, 200),
    ("POST", "/certificate_authorities",
     lambda w: {"json": {"custom_scep_proxy": {"name": "New_CA", "url": w["ca_url"],
                                               "challenge": "custom-ca-challenge"}}}, 200),
    ("GET", "/certificate_authorities/{ca}", None, 200),
    ("PATCH", "/certificate_authorities/{ca}",
     lambda w: {"json": {"custom_scep_proxy": {"max_concurrent_requests": 5}}}, 200),
    ("DELETE", "/certificate_authorities/{spare_ca}", None, 204),
    ("GET", "/certificate_authorities/{ca}/stats", None, 200),
    ("GET", "/activities", None, 200),
    ("GET", "/configuration_profiles", None, 200),
    ("POST", "/configuration_profiles", lambda w: _upload(OTHER), 200),
    ("GET", "/configuration_profiles/{profile}", None, 200),
    ("PUT", "/configuration_profiles/{profile}", lambda w: _upload(RENAMED), 200),
    ("DELETE", "/configuration_profiles/{profile}", None, 204),
    ("GET", "/configuration_profiles/{profile}/summary", None, 200),
    ("GET", "/configuration_profiles/{profile}/hosts", None, 200),
    ("POST", "/configuration_profiles/{profile}/retry_failed", None, 202),
    ("POST", "/hosts/H-A/configuration_profiles/{profile}/resend", None, 202),
    ("GET", "/hosts", None, 200),
    ("GET", "/hosts/H-A", None, 200),
    ("DELETE", "/hosts/H-GONE", None, 204),
    ("GET", "/hosts/H-A/configuration_profiles", None, 200),
    ("GET", "/hosts/H-A/certificates", None, 200),
    ("GET", "/certificates", None, 200),
    ("GET", "/api_tokens", None, 200),
    ("POST", "/api_tokens", lambda w: {"json": {"name": "new-bot", "role": "maintainer"}}, 200),
    ("DELETE", "/api_tokens/spare", None, 204),
    ("GET", "/teams", None, 200),
    ("POST", "/teams", lambda w: {"json": {"name": "New team"}}, 200),
    ("DELETE", "/teams/{team}", None, 204),
    ("POST", "/hosts/transfer", lambda w: {"json": {"team_id": w["team"], "hosts": ["H-A"]}}, 200),
    ("GET", "/labels", None, 200),
    ("POST", "/labels", lambda w: {"json": {"name": "New label", "hosts": ["H-A"]}}, 200),
    ("PATCH", "/labels/{label}", lambda w: {"json": {"hosts": []}}, 200),
    ("DELETE", "/labels/{label}", None, 204),
    ("GET", "/openapi.json", None, 200),
]
# What each call changes records an activity of this type (actor: the caller's token name).
ACTIVITIES = {
    ("POST", "/certificate_authorities"): "added_custom_scep_proxy",
    ("PATCH", "/certificate_authorities/{ca}"): "edited_custom_scep_proxy",
    ("DELETE", "/certificate_authorities/{spare_ca}"): "deleted_custom_scep_proxy",
    ("POST", "/configuration_profiles"): "created_configuration_profile",
    ("PUT", "/configuration_profiles/{profile}"): "edited_configuration_profile",
    ("DELETE", "/configuration_profiles/{profile}"): "deleted_configuration_profile",
    ("POST", "/configuration_profiles/{profile}/retry_failed"): "retried_configuration_profile",
    ("POST", "/hosts/H-A/configuration_profiles/{profile}/resend"): "resent_configuration_profile",
    ("DELETE", "/hosts/H-GONE"): "deleted_host",
    ("POST", "/api_tokens"): "created_api_token",
    ("DELETE", "/api_tokens/spare"): "revoked_api_token",
    ("POST", "/teams"): "created_team",
    ("DELETE", "/teams/{team}"): "deleted_team",
    ("POST", "/hosts/transfer"): "transferred_hosts",
    ("POST", "/labels"): "created_label",
    ("PATCH", "/labels/{label}"): "edited_label",
    ("DELETE", "/labels/{label}"): "deleted_label",
}
# The mapping the product promises (docs/api.md "Roles"), independent of api.py's declarations.
EXPECTED_ROLES = {
    **{(m, p): OBSERVER for m, p, _, _ in CALLS if m == "GET"},
    ("POST", "/configuration_profiles"): MAINTAINER,
    ("PUT", "/configuration_profiles/{profile}"): MAINTAINER,
    ("DELETE", "/configuration_profiles/{profile}"): MAINTAINER,
    ("POST", "/configuration_profiles/{profile}/retry_failed"): MAINTAINER,
    ("POST", "/hosts/H-A/configuration_profiles/{profile}/resend"): MAINTAINER,
    ("POST", "/certificate_authorities"): ADMIN,
    ("PATCH", "/certificate_authorities/{ca}"): ADMIN,
    ("DELETE", "/certificate_authorities/{spare_ca}"): ADMIN,
    ("DELETE", "/hosts/H-GONE"): ADMIN,
    ("POST", "/api_tokens"): ADMIN,
    ("DELETE", "/api_tokens/spare"): ADMIN,
    ("POST", "/teams"): ADMIN,
    ("DELETE", "/teams/{team}"): ADMIN,
    ("POST", "/hosts/transfer"): ADMIN,
    ("POST", "/labels"): MAINTAINER,
    ("PATCH", "/labels/{label}"): MAINTAINER,
    ("DELETE", "/labels/{label}"): MAINTAINER,
}


def _call(client: AdminClient, world: dict[str, Any], method: str, path: str, body):
    kwargs = body(world) if body else {}
    return getattr(client, method.lower())(API + path.format(**world), **kwargs)


def _snapshot(conn: psycopg.Connection) -> dict[str, str]:
    """Every row of every service's tables, hashed per table; of api_tokens all but last_used_at
    (the forbidden call's own token check records its use)."""
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = "
        "'BASE TABLE' AND table_schema = ANY(%s) ORDER BY 1, 2", (list(SCHEMAS),)).fetchall()
    state = {}
    for t in tables:
        name = f'"{t["table_schema"]}"."{t["table_name"]}"'
        columns = ("name, role, token_sha256, created_at, revoked_at"
                   if t["table_name"] == "api_tokens" else "r.*")
        state[name] = conn.execute(
            f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) AS h "  # noqa: S608
            f"FROM (SELECT {columns} FROM {name} r) r").fetchone()["h"]
    return state


def _cases(allowed: bool):
    return [pytest.param(role, call, id=f"{role}-{call[0]}-{call[1]}")
            for call in CALLS for role in ROLES
            if allows(role, EXPECTED_ROLES[(call[0], call[1])]) == allowed]


def test_every_route_is_called_by_every_role(admin_app):
    """CALLS reach every route the API serves, and each route declares the documented role."""
    adapter = admin_app.url_map.bind("localhost")
    called = {}
    for method, path, _, _ in CALLS:
        endpoint, _ = adapter.match(API + path.format(ca=1, spare_ca=2, profile="P", team=3,
                                                       label=4), method)
        called[endpoint] = EXPECTED_ROLES[(method, path)]
    assert called == routes.needed
    served = {r.endpoint for r in admin_app.url_map.iter_rules() if r.rule.startswith(API + "/")}
    assert served == set(routes.needed)


@pytest.mark.parametrize("role, call", _cases(allowed=True))
def test_a_call_within_the_tokens_role_does_its_work_as_the_token(world, tokens, db_conn, role,
                                                                   call):
    method, path, body, status = call
    state = _snapshot(db_conn)
    response = _call(tokens[role], world, method, path, body)
    assert response.status_code == status, response.get_data(as_text=True)
    if (method, path) in ACTIVITIES:
        newest = db_conn.execute("SELECT type, actor FROM activities ORDER BY id DESC").fetchone()
        assert newest == {"type": ACTIVITIES[(method, path)], "actor": f"{role}-bot"}
        assert _snapshot(db_conn) != state  # what the 403s are held to would see the change
    else:
        assert _snapshot(db_conn) == state


@pytest.mark.parametrize("role, call", _cases(allowed=False))
def test_a_call_beyond_the_tokens_role_is_a_403_that_changes_nothing(world, tokens, db_conn,
                                                                     publisher, role, call):
    method, path, body, _ = call
    needed = EXPECTED_ROLES[(method, path)]
    state, events = _snapshot(db_conn), list(publisher.messages)
    response = _call(tokens[role], world, method, path, body)
    assert response.status_code == 403
    assert response.json == {"message": f"This call needs the {needed} role",
                             "errors": [{"name": "role",
                                         "reason": f"needs {needed}; this token is {role}"}]}
    assert _snapshot(db_conn) == state and publisher.messages == events


def test_a_forbidden_call_is_refused_before_its_input_is_read(world, tokens, db_conn):
    # Not a 422 or a 413 for what the body holds: the role is checked first.
    state = _snapshot(db_conn)
    maintainer = tokens[MAINTAINER]
    assert maintainer.post(f"{API}/certificate_authorities", json={"bad": 1}).status_code == 403
    assert maintainer.post(f"{API}/api_tokens", data=b"x" * 100,
                           content_type="application/json").status_code == 403
    assert tokens[OBSERVER].delete(f"{API}/configuration_profiles/no-such").status_code == 403
    assert _snapshot(db_conn) == state


def test_the_bootstrap_token_is_an_admin(admin, world, db_conn):
    assert admin.delete(f"{API}/certificate_authorities/{world['spare_ca']}").status_code == 204
    created = admin.post(f"{API}/api_tokens", json={"name": "by-bootstrap", "role": "admin"})
    assert created.status_code == 200
    assert db_conn.execute("SELECT actor FROM activities ORDER BY id DESC LIMIT 1").fetchone() == \
        {"actor": "admin"}


def test_an_admin_token_may_make_tokens_of_every_role(tokens):
    for role in ROLES:
        made = tokens[ADMIN].post(f"{API}/api_tokens", json={"name": f"made-{role}", "role": role})
        assert (made.status_code, made.json["role"]) == (200, role)


def test_a_token_is_an_observer_unless_a_role_is_given(admin, admin_app, db_conn):
    created = admin.post(f"{API}/api_tokens", json={"name": "reader"})
    assert created.status_code == 200
    assert set(created.json) == {"name", "role", "token"}
    assert created.json["role"] == "observer" and created.json["token"].startswith("mdmscep_")
    assert db_conn.execute("SELECT role FROM api_tokens WHERE name = 'reader'").fetchone() == \
        {"role": "observer"}
    activity = db_conn.execute("SELECT actor, details FROM activities WHERE type = "
                               "'created_api_token'").fetchone()
    assert activity == {"actor": "admin", "details": {"name": "reader", "role": "observer"}}
    reader = AdminClient(admin_app.test_client(), created.json["token"])
    assert reader.get(f"{API}/hosts").status_code == 200
    assert reader.post(f"{API}/api_tokens", json={"name": "x"}).status_code == 403


@pytest.mark.parametrize("role", ["root", "Admin", "", " admin", "observer\x00", 5, None,
                                  ["admin"], {"role": "admin"}, True])
def test_an_unknown_role_is_a_422_naming_the_field(admin, db_conn, role):
    response = admin.post(f"{API}/api_tokens", json={"name": "bot", "role": role})
    assert response.status_code == 422
    assert response.json["errors"] == [{"name": "role",
                                         "reason": "A role is one of observer, maintainer, admin"}]
    assert db_conn.execute("SELECT count(*) AS n FROM api_tokens").fetchone() == {"n": 0}
    assert db_conn.execute("SELECT count(*) AS n FROM activities").fetchone() == {"n": 0}


def test_a_bad_name_and_role_are_named_together(admin):
    response = admin.post(f"{API}/api_tokens", json={"name": "bad name", "role": "root"})
    assert response.status_code == 422
    assert [e["name"] for e in response.json["errors"]] == ["name", "role"]


def test_a_taken_name_is_a_409_whatever_the_role(admin, tokens, db_conn):
    admin.delete(f"{API}/api_tokens/observer-bot")  # revoked tokens keep their names
    for name in ("maintainer-bot", "observer-bot"):
        response = admin.post(f"{API}/api_tokens", json={"name": name, "role": "admin"})
        assert response.status_code == 409 and response.json["errors"][0]["name"] == "name"
    assert db_conn.execute("SELECT role FROM api_tokens WHERE name = 'maintainer-bot'").fetchone() \
        == {"role": "maintainer"}


def test_the_token_list_shows_roles_never_values(tokens):
    listed = tokens[OBSERVER].get(f"{API}/api_tokens").json["api_tokens"]
    assert [(t["name"], t["role"]) for t in listed] == [(f"{r}-bot", r) for r in ROLES]
    assert all(set(t) == {"name", "role", "created_at", "last_used_at", "revoked_at"}
               for t in listed)


def test_a_revoked_tokens_role_does_not_outlive_it(admin, tokens):
    assert admin.delete(f"{API}/api_tokens/admin-bot").status_code == 204
    assert tokens[ADMIN].get(f"{API}/hosts").status_code == 401


def test_the_database_accepts_only_known_roles(db_conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        db_conn.execute("INSERT INTO api_tokens (name, token_sha256, role) VALUES "
                        "('x', '\\x01', 'root')")


def test_an_unknown_role_in_the_database_may_do_nothing():
    assert not any(allows("superuser", needed) for needed in ROLES)
    assert not allows("", OBSERVER)


def test_a_route_declared_around_the_table_needs_an_admin(admin_app, request):
    """A view on the blueprint without a role (added past `routes`) answers admins only, and
    `routes.undeclared` names it (create_app refuses to start with one)."""
    assert routes.undeclared(admin_app) == []
    admin_app.add_url_rule(f"{API}/sneaky", endpoint="api.sneaky",
                           view_func=lambda: jsonify({"ok": True}))
    assert routes.undeclared(admin_app) == ["api.sneaky"]
    tokens, admin = request.getfixturevalue("tokens"), request.getfixturevalue("admin")
    assert tokens[MAINTAINER].get(f"{API}/sneaky").json["message"] == \
        "This call needs the admin role"
    assert admin.get(f"{API}/sneaky").status_code == 200


def test_the_openapi_document_names_each_operations_role(admin):
    document = admin.get(f"{API}/openapi.json").json
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            rule = path.removeprefix(API).replace("{id}", "<int:ca_id>")
            rule = rule.replace("{team_id}", "<int:team_id>").replace("{label_id}",
                                                                      "<int:label_id>")
            rule = rule.replace("{", "<").replace("}", ">")
            role = routes.operations[(method.upper(), API + rule)]
            assert operation["x-required-role"] == role, (method, path)
            assert ("403" in operation["responses"]) == (role != OBSERVER), (method, path)
    schemas = document["components"]["schemas"]
    assert schemas["Role"]["enum"] == ["observer", "maintainer", "admin"]
    assert "role" in schemas["ApiToken"]["required"]
    body = document["paths"][f"{API}/api_tokens"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["role"]
    assert body["default"] == "observer"


def test_the_roles_migration_keeps_earlier_tokens_admins(tmp_path):
    """Tokens made before roles were full admins: admin-config's migration 0003 keeps them so;
    a token inserted after it without a role is an observer."""
    import shutil

    from mdmscep_common.db import drop_database, ensure_database
    from mdmscep_common.migrate import _apply, migrations_dir, service_migrations_dirs
    from tests.conftest import PG_BASE, RUN_ID

    folder = Path(service_migrations_dirs()["admin_config"])
    before_roles = tmp_path / "admin_config"
    before_roles.mkdir()
    for migration in sorted(folder.glob("*.sql")):
        if migration.name < "0003":
            shutil.copy(migration, before_roles)
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_roles"
    drop_database(url)
    ensure_database(url)
    try:
        _apply(url, migrations_dir(), "public")
        _apply(url, str(before_roles), "admin_config")
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO admin_config.api_tokens (name, token_sha256) VALUES "
                         "('old-ops', '\\x01'), ('old-ci', '\\x02')")
        # (Later migrations come after it.)
        assert _apply(url, str(folder), "admin_config")[0] == "admin_config/0003_api_token_roles"
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO admin_config.api_tokens (name, token_sha256) VALUES "
                         "('new', '\\x03')")
            assert conn.execute("SELECT name, role FROM admin_config.api_tokens ORDER BY id"
                                ).fetchall() == [("old-ops", "admin"), ("old-ci", "admin"),
                                                 ("new", "observer")]
    finally:
        drop_database(url)
