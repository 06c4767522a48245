"""`mdmscep gitops apply|export` against the admin API on a real port (its CA URL probes reach a
real scepserver): the server comes to match the file, a second apply changes nothing and says
so, a refused file changes nothing, and an export applies back as no changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
OTHER = SEED.replace(b"Fleet.custom.SCEP", b"Fleet.other.SCEP").replace(
    b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC", b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDD")
API = "/api/v1/fleet"
CHALLENGE = "custom-ca-challenge"  # the custom_ca scepserver's


def gitops_file(directory: Path, cas: list[dict], profiles: dict[str, bytes]) -> Path:
    """DIRECTORY/default.yml in Fleet's shape, its profiles written beside it."""
    (directory / "lib").mkdir(parents=True, exist_ok=True)
    for name, raw in profiles.items():
        (directory / "lib" / name).write_bytes(raw)
    document = {"org_settings": {"integrations": {"custom_scep_proxy": cas}},
                "controls": {"macos_settings": {"custom_settings": [
                    {"path": f"lib/{name}"} for name in profiles]}}}
    path = directory / "default.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def scep_ca(url: str, **limits) -> dict:
    return {"name": "Test_SCEP", "url": url, "challenge": "$GITOPS_TEST_SCEP_CHALLENGE", **limits}


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("GITOPS_TEST_SCEP_CHALLENGE", CHALLENGE)
    return monkeypatch


def state(live_admin) -> dict:
    """What a GitOps file can change, as the API shows it, and the activity feed."""
    cas = {}
    for summary in live_admin.get(f"{API}/certificate_authorities").json["certificate_authorities"]:
        detail = live_admin.get(f"{API}/certificate_authorities/{summary['id']}").json
        cas[detail["name"]] = detail
    profiles = {}
    for p in live_admin.get(f"{API}/configuration_profiles").json["profiles"]:
        raw = live_admin.get(f"{API}/configuration_profiles/{p['profile_uuid']}?alt=media")
        profiles[p["identifier"]] = (p["profile_uuid"], raw.get_data())
    activities = [(a["type"], a["actor"]) for a in
                  live_admin.get(f"{API}/activities").json["activities"]]
    return {"cas": cas, "profiles": profiles, "activities": activities}


def test_apply_makes_the_server_match_and_a_second_apply_changes_nothing(cli, live_admin,
                                                                       custom_ca, env, tmp_path):
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {"seed.mobileconfig": SEED})
    code, out = cli("gitops", "apply", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        f"added certificate authority Test_SCEP: url {custom_ca.url}, challenge from "
        "$GITOPS_TEST_SCEP_CHALLENGE",
        "added profile Fleet.custom.SCEP: from lib/seed.mobileconfig",
        "applied: 2 added, 0 changed, 0 deleted"]
    assert CHALLENGE not in out
    after = state(live_admin)
    assert after["cas"]["Test_SCEP"]["url"] == custom_ca.url
    assert after["profiles"]["Fleet.custom.SCEP"][1] == SEED
    assert after["activities"] == [("created_configuration_profile", "admin"),
                                   ("added_custom_scep_proxy", "admin")]

    code, out = cli("gitops", "apply", str(path))
    assert (code, out.strip()) == (0, f"no changes: the server matches {path}")
    code, out = cli("gitops", "apply", "--dry-run", str(path))
    assert (code, out.strip()) == (0, f"no changes: the server matches {path}")
    assert state(live_admin) == after


def test_the_challenge_applied_is_the_environment_variables(cli, live_admin, custom_ca, env,
                                                            tmp_path):
    """The server never shows a challenge: --force-challenges sends it, and the server changes
    (and re-sends profiles) only when it differs from the one it stores."""
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {})
    assert cli("gitops", "apply", str(path))[0] == 0

    def edits():
        return [a for a in state(live_admin)["activities"] if a[0] == "edited_custom_scep_proxy"]
    code, out = cli("gitops", "apply", "--force-challenges", str(path))
    assert code == 0 and out.splitlines()[0].startswith(
        "edited certificate authority Test_SCEP: challenge from $GITOPS_TEST_SCEP_CHALLENGE sent")
    assert edits() == []  # the same challenge as stored: the file's was applied
    env.setenv("GITOPS_TEST_SCEP_CHALLENGE", "a-new-challenge")
    assert cli("gitops", "apply", "--force-challenges", str(path))[0] == 0
    assert edits() == [("edited_custom_scep_proxy", "admin")]
    # Without the flag a changed challenge cannot be seen: no changes.
    env.setenv("GITOPS_TEST_SCEP_CHALLENGE", "yet-another")
    assert "no changes" in cli("gitops", "apply", str(path))[1]


def test_edits_replace_in_place_and_what_the_file_drops_is_deleted(cli, live_admin, custom_ca,
                                                                   env, tmp_path):
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)],
                       {"seed.mobileconfig": SEED, "other.mobileconfig": OTHER})
    assert cli("gitops", "apply", str(path))[0] == 0
    before = state(live_admin)

    # New content, same PayloadIdentifier: replaced in place; new limits: the CA edited.
    renamed = SEED.replace(b"<string>SCEP proxy cert</string>", b"<string>SCEP cert v2</string>")
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url, max_concurrent_requests=8)],
                       {"seed.mobileconfig": renamed, "other.mobileconfig": OTHER})
    code, out = cli("gitops", "apply", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        "edited certificate authority Test_SCEP: max_concurrent_requests 4 → 8",
        "edited profile Fleet.custom.SCEP: new content from lib/seed.mobileconfig (replaced in "
        "place)",
        "applied: 0 added, 2 changed, 0 deleted"]
    after = state(live_admin)
    assert after["profiles"]["Fleet.custom.SCEP"] == (before["profiles"]["Fleet.custom.SCEP"][0],
                                                      renamed)
    assert after["profiles"]["Fleet.other.SCEP"] == before["profiles"]["Fleet.other.SCEP"]
    assert after["cas"]["Test_SCEP"]["max_concurrent_requests"] == 8
    assert "no changes" in cli("gitops", "apply", str(path))[1]

    # A new URL is sent with the challenge (the API needs both).
    moved = custom_ca.url.replace("127.0.0.1", "localhost")
    path = gitops_file(tmp_path, [scep_ca(moved, max_concurrent_requests=8)],
                       {"seed.mobileconfig": renamed})
    code, out = cli("gitops", "apply", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        f"edited certificate authority Test_SCEP: url {custom_ca.url} → {moved}, challenge from "
        "$GITOPS_TEST_SCEP_CHALLENGE",
        "deleted profile Fleet.other.SCEP: not in the file (hosts get RemoveProfile)",
        "applied: 0 added, 1 changed, 1 deleted"]
    assert set(state(live_admin)["profiles"]) == {"Fleet.custom.SCEP"}
    assert state(live_admin)["cas"]["Test_SCEP"]["url"] == moved

    # An empty file: the profile goes first, then the CA it used.
    path.write_text("org_settings:\ncontrols:\n")
    code, out = cli("gitops", "apply", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        "deleted profile Fleet.custom.SCEP: not in the file (hosts get RemoveProfile)",
        "deleted certificate authority Test_SCEP: not in the file",
        "applied: 0 added, 0 changed, 2 deleted"]
    assert state(live_admin)["cas"] == {} and state(live_admin)["profiles"] == {}


def test_a_ca_the_file_leaves_out_stays_while_a_profile_of_the_file_uses_it(cli, live_admin,
                                                                           custom_ca, env,
                                                                           tmp_path):
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {"seed.mobileconfig": SEED})
    assert cli("gitops", "apply", str(path))[0] == 0
    path = gitops_file(tmp_path, [], {"seed.mobileconfig": SEED})
    code, out = cli("gitops", "apply", str(path))
    assert (code, out.splitlines()) == (0, [
        "kept certificate authority Test_SCEP: not in the file, but lib/seed.mobileconfig "
        "use(s) it", f"no changes: the server matches {path}"])


def test_dry_run_prints_the_plan_and_changes_nothing(cli, live_admin, custom_ca, env, tmp_path):
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {"seed.mobileconfig": SEED})
    before = state(live_admin)
    code, out = cli("gitops", "apply", "--dry-run", str(path))
    assert code == 0, out
    assert out.splitlines() == [
        f"+ add certificate authority Test_SCEP: url {custom_ca.url}, challenge from "
        "$GITOPS_TEST_SCEP_CHALLENGE",
        "+ add profile Fleet.custom.SCEP: from lib/seed.mobileconfig",
        "plan: 2 to add, 0 to change, 0 to delete (dry run: nothing was changed)"]
    assert state(live_admin) == before
    code, out = cli("--json", "gitops", "apply", "--dry-run", str(path))
    data = json.loads(out)
    assert data["dry_run"] is True and data["applied"] == 0
    assert [(c["action"], c["kind"], c["subject"]) for c in data["changes"]] == [
        ("add", "certificate authority", "Test_SCEP"), ("add", "profile", "Fleet.custom.SCEP")]
    assert CHALLENGE not in out and state(live_admin) == before


def test_a_profile_naming_an_unknown_ca_is_refused_before_any_change(cli, live_admin,
                                                                      custom_ca, env, tmp_path):
    unknown = SEED.replace(b"Test_SCEP", b"Nowhere_CA").replace(b"Fleet.custom.SCEP",
                                                                 b"Fleet.nowhere.SCEP")
    # A valid CA to add and a valid profile to upload come first in the file: neither happens.
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)],
                       {"seed.mobileconfig": SEED, "nowhere.mobileconfig": unknown})
    before = state(live_admin)
    code, out = cli("gitops", "apply", str(path))
    assert code != 0
    assert str(code).splitlines() == [
        "mdmscep: refused; nothing was changed:",
        f"  {path}: controls.macos_settings.custom_settings[1] (lib/nowhere.mobileconfig): "
        "names certificate authority Nowhere_CA, which is neither in "
        "org_settings.integrations.custom_scep_proxy nor on the server"]
    assert state(live_admin) == before


def test_a_missing_environment_variable_is_refused_before_any_change(cli, live_admin, custom_ca,
                                                                     monkeypatch, tmp_path):
    monkeypatch.delenv("GITOPS_TEST_SCEP_CHALLENGE", raising=False)
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {"seed.mobileconfig": SEED})
    before = state(live_admin)
    code, _ = cli("gitops", "apply", "--dry-run", str(path))
    assert "custom_scep_proxy[0].challenge: environment variable GITOPS_TEST_SCEP_CHALLENGE is " \
           "not set" in str(code)
    code, _ = cli("gitops", "apply", str(path))
    assert "GITOPS_TEST_SCEP_CHALLENGE is not set" in str(code)
    assert state(live_admin) == before


@pytest.mark.parametrize("text, expected", [
    ("org_settings: [\n", "not valid YAML"),
    ("org_settings: &a {}\ncontrols: *a\n", "anchors and aliases are not accepted"),
    ("org_settings:\ncontrols:\n  macos_settings:\n    custom_settings:\n      - path: x\n",
     "x: no such file"),
    ("# " + "x" * (1 << 20) + "\n", "over 1048576 bytes"),
])
def test_a_malformed_or_oversized_file_is_refused_and_changes_nothing(cli, live_admin, env,
                                                                      tmp_path, text, expected):
    path = tmp_path / "default.yml"
    path.write_text(text)
    before = state(live_admin)
    code, _ = cli("gitops", "apply", str(path))
    assert str(code).startswith("mdmscep: refused; nothing was changed:") and expected in str(code)
    assert state(live_admin) == before


def test_export_then_apply_reports_no_changes(cli, live_admin, custom_ca, monkeypatch, tmp_path):
    from tests.support.service_fixtures import create_ca

    assert create_ca(live_admin, "Test_SCEP", custom_ca.url, CHALLENGE).status_code == 200
    ca = live_admin.get(f"{API}/certificate_authorities").json["certificate_authorities"][0]
    assert live_admin.patch(f"{API}/certificate_authorities/{ca['id']}", json={
        "custom_scep_proxy": {"max_concurrent_requests": 2, "max_issuance_per_second": 0.5}}
    ).status_code == 200
    for raw in (SEED, OTHER):
        assert upload(live_admin, raw).status_code == 200
    before = state(live_admin)

    out_dir = tmp_path / "out"
    code, out = cli("gitops", "export", "--dir", str(out_dir))
    assert code == 0, out
    assert out.splitlines() == [
        f"wrote {out_dir / 'default.yml'}: 1 certificate authorities, 0 teams, 0 labels, "
        f"2 profiles (in {out_dir / 'profiles'})",
        "challenges are not exported (the server never shows them); set these before applying: "
        "MDMSCEP_CA_TEST_SCEP_CHALLENGE"]
    written = (out_dir / "default.yml").read_text()
    assert CHALLENGE not in written and "********" not in written
    assert yaml.safe_load(written) == {
        "org_settings": {"integrations": {"custom_scep_proxy": [{
            "name": "Test_SCEP", "url": custom_ca.url,
            "challenge": "$MDMSCEP_CA_TEST_SCEP_CHALLENGE", "max_concurrent_requests": 2,
            "max_issuance_per_second": 0.5}]}},
        "teams": [], "labels": [],
        "controls": {"macos_settings": {"custom_settings": [
            {"path": "profiles/Fleet.custom.SCEP.mobileconfig"},
            {"path": "profiles/Fleet.other.SCEP.mobileconfig"}]}}}
    assert (out_dir / "profiles" / "Fleet.custom.SCEP.mobileconfig").read_bytes() == SEED
    assert (out_dir / "profiles" / "Fleet.other.SCEP.mobileconfig").read_bytes() == OTHER

    # Without the variable the export is refused like any file; with it, nothing to change.
    code, _ = cli("gitops", "apply", str(out_dir / "default.yml"))
    assert "MDMSCEP_CA_TEST_SCEP_CHALLENGE is not set" in str(code)
    monkeypatch.setenv("MDMSCEP_CA_TEST_SCEP_CHALLENGE", CHALLENGE)
    code, out = cli("gitops", "apply", str(out_dir / "default.yml"))
    assert (code, out.strip()) == (0, f"no changes: the server matches {out_dir / 'default.yml'}")
    assert state(live_admin) == before


def test_gitops_needs_the_roles_of_what_it_changes(cli, live_admin, custom_ca, env, tmp_path):
    """export is a read (observer); apply makes each change with the token's role, CAs first, so
    a maintainer's apply that must add a CA stops before any profile changes."""
    from admin_config.roles import MAINTAINER, OBSERVER

    tokens = {role: live_admin.post(f"{API}/api_tokens",
                                    json={"name": f"{role}-bot", "role": role}).json["token"]
              for role in (OBSERVER, MAINTAINER)}
    assert cli("gitops", "export", "--dir", str(tmp_path / "out"), token=tokens[OBSERVER])[0] == 0
    path = gitops_file(tmp_path, [scep_ca(custom_ca.url)], {"seed.mobileconfig": SEED})
    before = state(live_admin)
    code, _ = cli("gitops", "apply", str(path), token=tokens[MAINTAINER])
    assert str(code) == ("mdmscep: stopped at '+ add certificate authority Test_SCEP: url "
                         f"{custom_ca.url}, challenge from $GITOPS_TEST_SCEP_CHALLENGE': 403: "
                         "This call needs the admin role (role: needs admin; this token is "
                         "maintainer) (0 of 2 changes applied before it; fix and apply again)")
    assert state(live_admin) == before


def upload(live_admin, raw: bytes):
    import io
    return live_admin.post(f"{API}/configuration_profiles",
                           data={"profile": (io.BytesIO(raw), "p.mobileconfig")},
                           content_type="multipart/form-data")


def scoped_file(directory: Path, ca_url: str, teams: list[str], labels: list[dict],
                settings: list[dict]) -> Path:
    """A file with teams, labels and scoped profiles (each setting's `path` a file of lib/
    holding the seed profile)."""
    (directory / "lib").mkdir(parents=True, exist_ok=True)
    for setting in settings:
        (directory / setting["path"]).write_bytes(SEED)
    document = {"org_settings": {"integrations": {"custom_scep_proxy": [scep_ca(ca_url)]}},
                "teams": [{"name": name} for name in teams], "labels": labels,
                "controls": {"macos_settings": {"custom_settings": settings}}}
    path = directory / "default.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def scopes(live_admin) -> dict:
    teams = {t["id"]: t["name"] for t in live_admin.get(f"{API}/teams").json["teams"]}
    labels = {x["name"]: (x["criteria"], x["hosts"])
              for x in live_admin.get(f"{API}/labels").json["labels"]}
    profiles = {(teams.get(p["team_id"]), p["identifier"]): {
        k: p[k] for k in ("labels_include_all", "labels_include_any", "labels_exclude_any") if p[k]}
        for p in live_admin.get(f"{API}/configuration_profiles").json["profiles"]}
    return {"teams": sorted(teams.values()), "labels": labels, "profiles": profiles}


def test_teams_labels_and_profile_scopes_apply_export_and_apply_again(cli, live_admin, custom_ca,
                                                                      env, mdm_db, tmp_path):
    with mdm_db.transaction() as conn:
        conn.execute("INSERT INTO hosts (uuid, serial_number, enrolled) VALUES "
                     "('G-1', 'C0G1', true), ('G-2', 'C0G2', true)")
    pilot = {"name": "Pilot", "hosts": ["G-1"]}
    sonoma = {"name": "Sonoma", "criteria": {"platform": "darwin", "os_version_at_least": "14"}}
    path = scoped_file(tmp_path, custom_ca.url, ["Engineering"], [pilot, sonoma], [
        {"path": "lib/seed.mobileconfig"},
        {"path": "lib/seed-eng.mobileconfig", "team": "Engineering",
         "labels_include_any": ["Pilot"]}])
    code, out = cli("gitops", "apply", str(path))
    assert code == 0, out
    assert out.splitlines()[1:] == [
        "added team Engineering",
        "added label Pilot: manual, 1 host(s)",
        "added label Sonoma: dynamic: platform=darwin, os_version_at_least=14",
        "added profile Fleet.custom.SCEP: from lib/seed.mobileconfig",
        "added profile Fleet.custom.SCEP (team Engineering): from lib/seed-eng.mobileconfig",
        "applied: 6 added, 0 changed, 0 deleted"]
    assert scopes(live_admin) == {
        "teams": ["Engineering"],
        "labels": {"Pilot": (None, ["G-1"]), "Sonoma": (sonoma["criteria"], [])},
        "profiles": {(None, "Fleet.custom.SCEP"): {},
                     ("Engineering", "Fleet.custom.SCEP"): {"labels_include_any": ["Pilot"]}}}
    assert cli("gitops", "apply", str(path))[1].strip() == f"no changes: the server matches {path}"

    # New hosts for a label, a new label rule (the profile uploaded again), a new team.
    path = scoped_file(tmp_path, custom_ca.url, ["Engineering", "Sales"],
                       [{**pilot, "hosts": ["G-2", "G-1"]}, sonoma], [
        {"path": "lib/seed.mobileconfig"},
        {"path": "lib/seed-eng.mobileconfig", "team": "Engineering",
         "labels_include_all": ["Pilot", "Sonoma"]}])
    before = scopes(live_admin)
    code, out = cli("gitops", "apply", "--dry-run", str(path))
    assert code == 0 and out.splitlines() == [
        "+ add team Sales",
        "~ edit label Pilot: hosts set (2)",
        "- delete profile Fleet.custom.SCEP (team Engineering): its label rule changed: uploaded "
        "again (hosts it no longer admits get RemoveProfile)",
        "+ add profile Fleet.custom.SCEP (team Engineering): from lib/seed-eng.mobileconfig, "
        "with its new label rule",
        "plan: 2 to add, 1 to change, 1 to delete (dry run: nothing was changed)"]
    assert scopes(live_admin) == before
    assert cli("gitops", "apply", str(path))[0] == 0
    after = scopes(live_admin)
    assert after["teams"] == ["Engineering", "Sales"]
    assert after["labels"]["Pilot"] == (None, ["G-1", "G-2"])
    assert after["profiles"][("Engineering", "Fleet.custom.SCEP")] == {
        "labels_include_all": ["Pilot", "Sonoma"]}
    assert "no changes" in cli("gitops", "apply", str(path))[1]

    # A profile naming a team the file does not list: refused, nothing changed.
    bad = scoped_file(tmp_path / "bad", custom_ca.url, ["Sales"], [pilot, sonoma], [
        {"path": "lib/seed.mobileconfig", "team": "Nope"}])
    code, _ = cli("gitops", "apply", str(bad))
    assert str(code).startswith("mdmscep: refused; nothing was changed:")
    assert "names team Nope, which is not in teams" in str(code)
    assert scopes(live_admin) == after

    # Export, then apply: no changes; what the file drops goes, the team after its profile.
    out_dir = tmp_path / "out"
    code, out = cli("gitops", "export", "--dir", str(out_dir))
    assert code == 0 and "1 certificate authorities, 2 teams, 2 labels, 2 profiles" in out
    env.setenv("MDMSCEP_CA_TEST_SCEP_CHALLENGE", CHALLENGE)
    exported = out_dir / "default.yml"
    assert "no changes" in cli("gitops", "apply", str(exported))[1]
    written = yaml.safe_load(exported.read_text())
    assert written["teams"] == [{"name": "Engineering"}, {"name": "Sales"}]
    assert written["labels"][0] == {"name": "Pilot", "label_membership_type": "manual",
                                    "hosts": ["G-1", "G-2"]}
    assert written["controls"]["macos_settings"]["custom_settings"][1]["team"] == "Engineering"
    path = scoped_file(tmp_path, custom_ca.url, ["Sales"], [pilot], [
        {"path": "lib/seed.mobileconfig"}])
    code, out = cli("gitops", "apply", str(path))
    assert code == 0 and out.splitlines() == [
        "edited label Pilot: hosts set (1)",
        "deleted profile Fleet.custom.SCEP (team Engineering): not in the file (hosts get "
        "RemoveProfile)",
        "deleted label Sonoma: not in the file",
        "deleted team Engineering: not in the file (its hosts go to no team)",
        "applied: 0 added, 1 changed, 3 deleted"]
    assert scopes(live_admin) == {"teams": ["Sales"], "labels": {"Pilot": (None, ["G-1"])},
                                  "profiles": {(None, "Fleet.custom.SCEP"): {}}}
