"""Admin API: teams, labels, host transfer and profile scopes (Fleet's shapes). admin-config owns
them; hosts are mdm-endpoint's (its real HostRegistry servicer over the test's rows); every
change adds its config.changed events to admin-config's outbox (read back here, rolled back with
the test)."""

from __future__ import annotations

import io

import psycopg
import pytest

from admin_config.app import build_services, create_app
from admin_config.scep_gateway import ScepGatewayClient
from mdmscep_common.config_events import read_host_team_state, read_label_state, read_profile_state
from mdmscep_common.health import HealthChecks
from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, Outbox
from mdmscep_common.service_database import SCHEMAS, service_dsn
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.database_rights import role_can
from tests.support.owner_doubles import row_owners
from tests.support.service_certs import service_tls, tls_env
from tests.support.service_fixtures import AdminClient
from tests.support.settings import load_settings

API = "/api/v1/fleet"


def profile(identifier: str, name: str = "Wi-Fi", payload_uuid: str = "1B0E6C6E-0000-4000-8000-0000000000A1"
            ) -> bytes:
    """A profile without SCEP payload (no CA needed)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadType</key><string>com.apple.wifi.managed</string>
      <key>PayloadIdentifier</key><string>{identifier}.wifi</string>
      <key>PayloadUUID</key><string>2B0E6C6E-0000-4000-8000-0000000000B2</string>
      <key>PayloadVersion</key><integer>1</integer>
      <key>SSID_STR</key><string>office</string>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>{name}</string>
  <key>PayloadIdentifier</key><string>{identifier}</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{payload_uuid}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
""".encode()


@pytest.fixture
def admin_app(db, scep_gateway, database_url):
    """The admin API in-process with its real outbox (over the test's rolled-back transaction)."""
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "DATABASE_URL": database_url,
                              **tls_env("admin-config")})
    services = build_services(settings, db,
                              ScepGatewayClient(scep_gateway, service_tls("admin-config"), 2.0),
                              Outbox(ADMIN_CONFIG_OUTBOX), **row_owners(db))
    app = create_app(services, HealthChecks({}))
    app.testing = True
    return app


@pytest.fixture
def hosts(db_conn):
    db_conn.execute("INSERT INTO hosts (uuid, serial_number, enrolled) VALUES "
                    "('H-1', 'C001', true), ('H-2', 'C002', true), ('H-3', 'C003', true)")
    return ["H-1", "H-2", "H-3"]


def events(conn, kind: str | None = None) -> list[dict]:
    rows = conn.execute("SELECT routing_key, body FROM admin_config_outbox ORDER BY id").fetchall()
    assert all(r["routing_key"] == "config.changed" for r in rows)
    return [r["body"] for r in rows if kind is None or r["body"]["kind"] == kind]


def activities(conn) -> list[tuple[str, dict]]:
    return [(r["type"], r["details"]) for r in
            conn.execute("SELECT type, details FROM activities ORDER BY id").fetchall()]


def upload(admin, raw: bytes, **fields):
    data = {"profile": (io.BytesIO(raw), "p.mobileconfig"), **fields}
    return admin.post(f"{API}/configuration_profiles", data=data,
                      content_type="multipart/form-data")


def team(admin, name: str) -> int:
    response = admin.post(f"{API}/teams", json={"name": name})
    assert response.status_code == 200, response.json
    return response.json["team"]["id"]


def label(admin, name: str, **body) -> int:
    response = admin.post(f"{API}/labels", json={"name": name, **body})
    assert response.status_code == 200, response.json
    return response.json["label"]["id"]


def transfer(admin, team_id, hosts):
    return admin.post(f"{API}/hosts/transfer", json={"team_id": team_id, "hosts": hosts})


# --- teams --------------------------------------------------------------------------------------

def test_teams_are_created_listed_and_deleted(admin, db_conn, hosts):
    created = admin.post(f"{API}/teams", json={"name": "Engineering"})
    assert created.status_code == 200
    assert created.json == {"team": {"id": created.json["team"]["id"], "name": "Engineering"}}
    sales = team(admin, "Sales")
    assert transfer(admin, sales, ["H-1"]).status_code == 200
    listed = admin.get(f"{API}/teams").json
    assert listed["meta"] == {"total": 2, "page": 0, "per_page": 100}
    assert [(t["name"], t["host_count"]) for t in listed["teams"]] == [("Engineering", 0),
                                                                        ("Sales", 1)]
    assert admin.get(f"{API}/teams", query_string={"per_page": 1, "page": 1}).json["teams"][0][
        "name"] == "Sales"
    taken = admin.post(f"{API}/teams", json={"name": "Sales"})
    assert taken.status_code == 409 and taken.json["errors"][0]["name"] == "name"
    engineering = created.json["team"]["id"]
    assert admin.delete(f"{API}/teams/{engineering}").status_code == 204
    assert admin.delete(f"{API}/teams/{engineering}").status_code == 404
    assert admin.delete(f"{API}/teams/99999999999999999999").status_code == 404
    assert [t["name"] for t in admin.get(f"{API}/teams").json["teams"]] == ["Sales"]
    assert [a for a in activities(db_conn) if a[0].endswith("_team")] == [
        ("created_team", {"team_id": engineering, "team_name": "Engineering"}),
        ("created_team", {"team_id": sales, "team_name": "Sales"}),
        ("deleted_team", {"team_id": engineering, "team_name": "Engineering"})]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "  "}, {"name": 5},
                                  {"name": "a\x00b"}, {"name": "a\nb"}, {"name": "x" * 256},
                                  {"name": "\ud800"}, [], None])
def test_a_team_needs_a_printable_name(admin, db_conn, body):
    response = admin.post(f"{API}/teams", json=body)
    assert response.status_code == 400 and response.json["errors"][0]["name"] == "name"
    assert db_conn.execute("SELECT count(*) AS n FROM teams").fetchone() == {"n": 0}


def test_transfer_moves_hosts_and_announces_each_host_whose_team_changed(admin, db_conn, hosts):
    a, b = team(admin, "A"), team(admin, "B")
    response = transfer(admin, a, ["H-1", "H-2", "H-1"])
    assert response.status_code == 200 and response.json == {"hosts": 2, "moved": 2}
    moved = events(db_conn, "host_team")
    assert [(e["action"], read_host_team_state(e["host_team"])) for e in moved] == [
        ("transferred", read_host_team_state({"host_uuid": "H-1", "team_id": a})),
        ("transferred", read_host_team_state({"host_uuid": "H-2", "team_id": a}))]
    assert [e["host_uuid"] for e in moved] == ["H-1", "H-2"]
    # Hosts already in the team publish nothing.
    assert transfer(admin, a, ["H-1", "H-2", "H-3"]).json == {"hosts": 3, "moved": 1}
    assert [e["host_uuid"] for e in events(db_conn, "host_team")[2:]] == ["H-3"]
    assert transfer(admin, b, ["H-3"]).json["moved"] == 1
    assert transfer(admin, None, ["H-1"]).json["moved"] == 1
    assert transfer(admin, 0, ["H-1"]).json["moved"] == 0  # 0 is no team too
    assert [e["host_team"] for e in events(db_conn, "host_team")[3:]] == [
        {"host_uuid": "H-3", "team_id": b}, {"host_uuid": "H-1", "team_id": None}]
    teams = {r["host_uuid"]: r["team_id"] for r in
             db_conn.execute("SELECT host_uuid, team_id FROM host_teams").fetchall()}
    assert teams == {"H-2": a, "H-3": b}
    assert activities(db_conn)[-1] == ("transferred_hosts",
                                       {"team_id": None, "team_name": None, "host_count": 1})
    assert ("transferred_hosts", {"team_id": a, "team_name": "A", "host_count": 3}) in \
        activities(db_conn)
    # The hosts' teams, as the host list and detail show them, and the list by team.
    listed = admin.get(f"{API}/hosts").json["hosts"]
    assert [(h["uuid"], h["team_id"]) for h in listed] == [("H-1", None), ("H-2", a), ("H-3", b)]
    assert admin.get(f"{API}/hosts/H-2").json["team_id"] == a
    assert admin.get(f"{API}/hosts/H-1").json["team_id"] is None

    def listed_in(team_id, **args):
        answer = admin.get(f"{API}/hosts", query_string={"team_id": team_id, **args})
        assert answer.status_code == 200, answer.json
        return [h["uuid"] for h in answer.json["hosts"]], answer.json["meta"]["total"]

    assert listed_in(a) == (["H-2"], 1)
    assert listed_in(0) == (["H-1"], 1)
    assert listed_in(b, query="c003") == (["H-3"], 1)
    assert listed_in(b, query="c001") == ([], 0)
    assert admin.get(f"{API}/hosts", query_string={"team_id": 424242}).status_code == 400
    assert admin.get(f"{API}/hosts", query_string={"team_id": "x"}).status_code == 400


def test_the_host_list_by_team_with_a_delivery_filter(admin, db_conn, hosts):
    a = team(admin, "A")
    transfer(admin, a, ["H-1", "H-2"])
    uploaded = upload(admin, profile("com.example.p"))
    p = uploaded.json["profile_uuid"]
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, profile_name, "
                    "operation_type, status) SELECT h, %s, 'com.example.p', 'Wi-Fi', 'install', "
                    "'failed' FROM unnest(ARRAY['H-1', 'H-3']) h", (p,))
    def uuids(**args):
        return [h["uuid"] for h in admin.get(f"{API}/hosts", query_string=args).json["hosts"]]
    assert uuids(status="failed") == ["H-1", "H-3"]
    assert uuids(status="failed", team_id=a) == ["H-1"]
    assert uuids(status="failed", team_id=0) == ["H-3"]
    assert uuids(profile_uuid=p, team_id=a, query="c001") == ["H-1"]


def test_a_transfer_naming_an_unknown_host_or_team_changes_nothing(admin, db_conn, hosts):
    a = team(admin, "A")
    before = activities(db_conn)
    response = transfer(admin, a, ["H-1", "NOPE-1", "H-2", "NOPE-2"])
    assert response.status_code == 400
    assert response.json["errors"] == [{"name": "hosts", "reason": "unknown host(s): NOPE-1, NOPE-2"}]
    assert "NOPE-1" in response.json["message"]
    for body, field in [({"team_id": 424242, "hosts": ["H-1"]}, "team_id"),
                        ({"team_id": "1", "hosts": ["H-1"]}, "team_id"),
                        ({"team_id": True, "hosts": ["H-1"]}, "team_id"),
                        ({"team_id": False, "hosts": ["H-1"]}, "team_id"),
                        ({"team_id": 1.0, "hosts": ["H-1"]}, "team_id"),
                        ({"team_id": 10 ** 30, "hosts": ["H-1"]}, "team_id"),
                        ({"hosts": ["H-1"]}, "team_id"),
                        ({"team_id": a}, "hosts"),
                        ({"team_id": a, "hosts": []}, "hosts"),
                        ({"team_id": a, "hosts": "H-1"}, "hosts"),
                        ({"team_id": a, "hosts": ["H-1", 5]}, "hosts"),
                        ({"team_id": a, "hosts": ["H\x00"]}, "hosts"),
                        ({"team_id": a, "hosts": ["x" * 5000]}, "hosts")]:
        answer = admin.post(f"{API}/hosts/transfer", json=body)
        assert answer.status_code == 400, (body, answer.json)
        assert answer.json["errors"][0]["name"] == field, body
    assert admin.post(f"{API}/hosts/transfer", data="nope").status_code == 400
    assert db_conn.execute("SELECT count(*) AS n FROM host_teams").fetchone() == {"n": 0}
    assert events(db_conn, "host_team") == [] and activities(db_conn) == before


# --- labels -------------------------------------------------------------------------------------

def test_manual_and_dynamic_labels(admin, db_conn, hosts):
    created = admin.post(f"{API}/labels", json={"name": "Pilot", "hosts": ["H-2", "H-1", "H-2"]})
    assert created.status_code == 200
    pilot = created.json["label"]["id"]
    assert created.json["label"] == {"id": pilot, "name": "Pilot", "label_membership_type": "manual",
                                     "criteria": None, "hosts": ["H-1", "H-2"]}
    sonoma = label(admin, "Sonoma Macs",
                   criteria={"platform": "darwin", "os_version_at_least": "14"})
    listed = admin.get(f"{API}/labels").json
    assert listed["meta"]["total"] == 2
    assert listed["labels"][1] == {"id": sonoma, "name": "Sonoma Macs",
                                   "label_membership_type": "dynamic",
                                   "criteria": {"platform": "darwin", "os_version_at_least": "14"},
                                   "hosts": []}
    # PATCH replaces a manual label's hosts.
    patched = admin.patch(f"{API}/labels/{pilot}", json={"hosts": ["H-3"]})
    assert patched.status_code == 200 and patched.json["label"]["hosts"] == ["H-3"]
    assert admin.patch(f"{API}/labels/{pilot}", json={"hosts": []}).json["label"]["hosts"] == []
    labelled = [(e["action"], e["id"], read_label_state(e["label"])) for e in events(db_conn)]
    assert [(action, i, state.name, state.criteria, state.hosts) for action, i, state in labelled] \
        == [("added", pilot, "Pilot", None, ("H-1", "H-2")),
            ("added", sonoma, "Sonoma Macs", {"platform": "darwin", "os_version_at_least": "14"}, ()),
            ("edited", pilot, "Pilot", None, ("H-3",)),
            ("edited", pilot, "Pilot", None, ())]
    assert [a for a, _ in activities(db_conn)] == ["created_label", "created_label",
                                                   "edited_label", "edited_label"]
    assert activities(db_conn)[0][1] == {"label_id": pilot, "label_name": "Pilot",
                                         "label_membership_type": "manual"}
    # Refused, changing nothing.
    before = len(events(db_conn))
    for method, path, body, status, field in [
        ("patch", f"/labels/{sonoma}", {"hosts": ["H-1"]}, 400, "hosts"),
        ("patch", f"/labels/{sonoma}", {"criteria": {"model": "x"}}, 400, "criteria"),
        ("patch", f"/labels/{pilot}", {"hosts": ["H-1", "NOPE"]}, 400, "hosts"),
        ("patch", f"/labels/{pilot}", {}, 400, "hosts"),
        ("patch", f"/labels/{pilot}", {"name": "Sonoma Macs"}, 409, "name"),
        ("patch", "/labels/424242", {"hosts": []}, 404, None),
        ("post", "/labels", {"name": "Pilot", "hosts": []}, 409, "name"),
        ("post", "/labels", {"name": "X", "hosts": ["NOPE"]}, 400, "hosts"),
        ("post", "/labels", {"name": "X", "hosts": ["H-1"], "criteria": {"model": "M"}}, 400,
         "hosts"),
        ("post", "/labels", {"name": "X"}, 400, "hosts"),
        ("post", "/labels", {"name": "", "hosts": []}, 400, "name"),
        ("post", "/labels", {"name": "X", "criteria": {}}, 400, "criteria"),
        ("post", "/labels", {"name": "X", "criteria": {"colour": "red"}}, 400, "criteria.colour"),
        ("post", "/labels", {"name": "X", "criteria": {"platform": "windows"}}, 400,
         "criteria.platform"),
        ("post", "/labels", {"name": "X", "criteria": {"os_version_at_least": "fourteen"}}, 400,
         "criteria.os_version_at_least"),
        ("post", "/labels", {"name": "X", "criteria": {"model": 5}}, 400, "criteria.model"),
        ("post", "/labels", {"name": "X", "criteria": "model=x"}, 400, "criteria"),
        ("post", "/labels", ["X"], 400, "name"),
    ]:
        answer = getattr(admin, method)(API + path, json=body)
        assert answer.status_code == status, (path, body, answer.json)
        if field:
            assert answer.json["errors"][0]["name"] == field, (path, body, answer.json)
    assert len(events(db_conn)) == before
    assert db_conn.execute("SELECT count(*) AS n FROM labels").fetchone() == {"n": 2}
    assert admin.patch(f"{API}/labels/{pilot}", json={"name": "Pilot group"}).json["label"][
        "name"] == "Pilot group"


def test_a_label_a_profile_names_cannot_be_deleted(admin, db_conn, hosts):
    pilot = label(admin, "Pilot", hosts=["H-1"])
    spare = label(admin, "Spare", hosts=[])
    p = upload(admin, profile("com.example.p"), labels_exclude_any="Pilot").json["profile_uuid"]
    used = admin.delete(f"{API}/labels/{pilot}")
    assert used.status_code == 409 and "Wi-Fi" in used.json["message"]
    assert admin.delete(f"{API}/labels/{spare}").status_code == 204
    assert admin.delete(f"{API}/labels/{spare}").status_code == 404
    assert admin.delete(f"{API}/configuration_profiles/{p}").status_code == 204
    assert admin.delete(f"{API}/labels/{pilot}").status_code == 204
    deleted = [e for e in events(db_conn, "label") if e["action"] == "deleted"]
    assert deleted == [{"kind": "label", "action": "deleted", "id": spare, "label": None},
                       {"kind": "label", "action": "deleted", "id": pilot, "label": None}]
    assert [d for t, d in activities(db_conn) if t == "deleted_label"] == [
        {"label_id": spare, "label_name": "Spare"}, {"label_id": pilot, "label_name": "Pilot"}]


# --- profile scopes -----------------------------------------------------------------------------

def test_a_profiles_event_carries_its_team_and_label_rule(admin, db_conn, hosts):
    a = team(admin, "A")
    pilot, macs = label(admin, "Pilot", hosts=["H-1"]), label(admin, "Macs", criteria={
        "platform": "darwin"})
    excluded = label(admin, "Excluded", hosts=[])
    response = admin.post(f"{API}/configuration_profiles", data={
        "profile": (io.BytesIO(profile("com.example.p")), "p.mobileconfig"), "team_id": str(a),
        "labels_include_any": ["Pilot", "Macs", "Pilot"], "labels_exclude_any": "Excluded"},
        content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    p = response.json["profile_uuid"]
    event = events(db_conn, "profile")[-1]
    state = read_profile_state(event["profile"])
    assert (event["action"], state.team_id) == ("added", a)
    assert sorted(state.labels) == sorted([("include_any", pilot), ("include_any", macs),
                                           ("exclude_any", excluded)])
    assert event["profile"]["labels"] == {"include_all": [], "include_any": sorted([pilot, macs]),
                                          "exclude_any": [excluded]}
    shown = admin.get(f"{API}/configuration_profiles/{p}").json
    assert shown["team_id"] == a
    assert (shown["labels_include_all"], shown["labels_include_any"],
            shown["labels_exclude_any"]) == ([], ["Macs", "Pilot"], ["Excluded"])
    # A replacement keeps the scope.
    replaced = admin.put(f"{API}/configuration_profiles/{p}", data={
        "profile": (io.BytesIO(profile("com.example.p", "Wi-Fi 2")), "p.mobileconfig")},
        content_type="multipart/form-data")
    assert replaced.status_code == 200 and replaced.json["team_id"] == a
    assert replaced.json["labels_include_any"] == ["Macs", "Pilot"]
    again = read_profile_state(events(db_conn, "profile")[-1]["profile"])
    assert (again.name, again.team_id, sorted(again.labels)) == ("Wi-Fi 2", a, sorted(state.labels))
    # Without a team field, or with 0: for hosts of no team.
    q = upload(admin, profile("com.example.q")).json["profile_uuid"]
    r = upload(admin, profile("com.example.r"), team_id="0").json["profile_uuid"]
    assert read_profile_state(events(db_conn, "profile")[-1]["profile"]).team_id is None
    assert read_profile_state(events(db_conn, "profile")[-1]["profile"]).labels == ()

    def listed(**args):
        answer = admin.get(f"{API}/configuration_profiles", query_string=args)
        assert answer.status_code == 200, answer.json
        # (One transaction's uploads share created_at: the list is in UUID order then.)
        return {x["profile_uuid"] for x in answer.json["profiles"]}, answer.json["meta"]["total"]

    assert listed() == ({p, q, r}, 3)
    assert listed(team_id=a) == ({p}, 1)
    assert listed(team_id=0) == ({q, r}, 2)
    assert listed(team_id=424242) == (set(), 0)
    assert admin.get(f"{API}/configuration_profiles",
                     query_string={"team_id": "-1"}).status_code == 400
    assert admin.get(f"{API}/configuration_profiles",
                     query_string={"team_id": "99999999999999999999"}).status_code == 400
    assert {x["profile_uuid"]: x["team_id"] for x in admin.get(
        f"{API}/configuration_profiles").json["profiles"]} == {p: a, q: None, r: None}


@pytest.mark.parametrize("fields, field", [
    ({"team_id": "424242"}, "team_id"),
    ({"team_id": "abc"}, "team_id"),
    ({"team_id": "99999999999999999999"}, "team_id"),
    ({"labels_include_all": "Nope"}, "labels_include_all"),
    ({"labels_include_any": ["Pilot", "Nope"]}, "labels_include_any"),
    ({"labels_include_all": "Pilot", "labels_include_any": "Macs"}, "labels_include_all"),
    ({"labels_include_any": "Pilot", "labels_exclude_any": "Pilot"}, "labels_exclude_any"),
    ({"labels_exclude_any": ""}, "labels_exclude_any"),
    ({"labels_exclude_any": "a\x00"}, "labels_exclude_any"),
])
def test_an_upload_naming_an_unknown_team_or_label_is_refused(admin, db_conn, hosts, fields,
                                                              field):
    label(admin, "Pilot", hosts=["H-1"])
    label(admin, "Macs", criteria={"platform": "darwin"})
    before = len(events(db_conn))
    response = upload(admin, profile("com.example.p"), **fields)
    assert response.status_code == 400, response.json
    assert response.json["errors"][0]["name"] == field
    assert db_conn.execute("SELECT count(*) AS n FROM profiles").fetchone() == {"n": 0}
    assert len(events(db_conn)) == before


def test_one_payload_identifier_in_several_teams_once_in_each(admin, db_conn):
    a, b = team(admin, "A"), team(admin, "B")
    raw = profile("com.example.same")
    assert upload(admin, raw).status_code == 200
    assert upload(admin, raw, team_id=str(a)).status_code == 200
    assert upload(admin, raw, team_id=str(b)).status_code == 200
    for fields in ({"team_id": str(a)}, {}, {"team_id": "0"}):
        twice = upload(admin, raw, **fields)
        assert twice.status_code == 400
        assert "PayloadIdentifier com.example.same already exists" in twice.json["message"]
    # The database holds the rule too.
    with pytest.raises(psycopg.errors.UniqueViolation), db_conn.transaction():
        db_conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, "
                        "checksum, team_id) VALUES ('dup', 'x', 'com.example.same', 'u', '', '', "
                        "%s)", (b,))


def test_deleting_a_team_moves_its_hosts_to_no_team_and_deletes_its_profiles(admin, db_conn,
                                                                              hosts):
    a, b = team(admin, "A"), team(admin, "B")
    pilot = label(admin, "Pilot", hosts=["H-1"])
    transfer(admin, a, ["H-1", "H-2"])
    transfer(admin, b, ["H-3"])
    in_a = upload(admin, profile("com.example.a"), team_id=str(a),
                  labels_include_all="Pilot").json["profile_uuid"]
    in_b = upload(admin, profile("com.example.b"), team_id=str(b)).json["profile_uuid"]
    no_team = upload(admin, profile("com.example.n")).json["profile_uuid"]
    seen = len(events(db_conn))
    assert admin.delete(f"{API}/teams/{a}").status_code == 204
    announced = events(db_conn)[seen:]
    assert announced == [
        {"kind": "profile", "action": "deleted", "profile_uuid": in_a, "profile": None},
        {"kind": "host_team", "action": "transferred", "host_uuid": "H-1",
         "host_team": {"host_uuid": "H-1", "team_id": None}},
        {"kind": "host_team", "action": "transferred", "host_uuid": "H-2",
         "host_team": {"host_uuid": "H-2", "team_id": None}}]
    assert activities(db_conn)[-2:] == [
        ("deleted_configuration_profile", {"profile_name": "Wi-Fi",
                                           "profile_identifier": "com.example.a"}),
        ("deleted_team", {"team_id": a, "team_name": "A"})]
    assert {p["profile_uuid"] for p in admin.get(f"{API}/configuration_profiles").json[
        "profiles"]} == {in_b, no_team}
    assert [(h["uuid"], h["team_id"]) for h in admin.get(f"{API}/hosts").json["hosts"]] == [
        ("H-1", None), ("H-2", None), ("H-3", b)]
    assert db_conn.execute("SELECT count(*) AS n FROM profile_labels").fetchone() == {"n": 0}
    assert admin.delete(f"{API}/labels/{pilot}").status_code == 204  # no profile names it now


def test_a_forgotten_host_leaves_its_team_and_labels(admin, db_conn, hosts):
    a = team(admin, "A")
    pilot = label(admin, "Pilot", hosts=["H-1", "H-2"])
    transfer(admin, a, ["H-1"])
    seen = len(events(db_conn))
    assert admin.delete(f"{API}/hosts/H-1").status_code == 204
    announced = [e for e in events(db_conn)[seen:] if e["kind"] in ("host_team", "label")]
    assert announced[0]["host_team"] == {"host_uuid": "H-1", "team_id": None}
    assert (announced[1]["id"], announced[1]["label"]["hosts"]) == (pilot, ["H-2"])
    assert db_conn.execute("SELECT count(*) AS n FROM host_teams").fetchone() == {"n": 0}


# --- roles and grants ---------------------------------------------------------------------------

@pytest.fixture
def tokens(admin, admin_app):
    clients = {}
    for role in ("observer", "maintainer"):
        created = admin.post(f"{API}/api_tokens", json={"name": f"{role}-bot", "role": role})
        clients[role] = AdminClient(admin_app.test_client(), created.json["token"])
    return clients


def test_teams_need_an_admin_and_labels_a_maintainer(admin, tokens, db_conn, hosts):
    maintainer, observer = tokens["maintainer"], tokens["observer"]
    a = team(admin, "A")
    assert maintainer.post(f"{API}/teams", json={"name": "B"}).status_code == 403
    assert maintainer.delete(f"{API}/teams/{a}").status_code == 403
    assert maintainer.post(f"{API}/hosts/transfer",
                           json={"team_id": a, "hosts": ["H-1"]}).status_code == 403
    assert observer.post(f"{API}/labels", json={"name": "L", "hosts": []}).status_code == 403
    assert db_conn.execute("SELECT count(*) AS n FROM labels").fetchone() == {"n": 0}
    assert db_conn.execute("SELECT count(*) AS n FROM host_teams").fetchone() == {"n": 0}
    made = maintainer.post(f"{API}/labels", json={"name": "L", "hosts": []})
    assert made.status_code == 200
    assert observer.patch(f"{API}/labels/{made.json['label']['id']}",
                          json={"hosts": []}).status_code == 403
    assert observer.get(f"{API}/teams").status_code == 200
    assert observer.get(f"{API}/labels").status_code == 200


NEW_TABLES = ("teams", "host_teams", "labels", "label_hosts", "profile_labels")


def test_the_new_tables_are_admin_configs_alone(database_url):
    mine = service_dsn(database_url, "admin-config")
    for table in NEW_TABLES:
        assert role_can(mine, f"SELECT 1 FROM admin_config.{table} LIMIT 1")  # noqa: S608
        assert role_can(mine, f"DELETE FROM admin_config.{table} WHERE false")  # noqa: S608
    # Its sequences too (bigserial ids).
    assert role_can(mine, "INSERT INTO teams (name) VALUES ('grant-check')")
    assert role_can(mine, "INSERT INTO labels (name) VALUES ('grant-check')")
    for service in SCHEMAS:
        if service != "admin-config":
            for table in NEW_TABLES:
                assert not role_can(service_dsn(database_url, service),
                                f"SELECT 1 FROM admin_config.{table} LIMIT 1")  # noqa: S608
