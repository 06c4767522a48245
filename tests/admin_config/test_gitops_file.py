"""`mdmscep gitops`: reading and checking a GitOps file (admin_config/gitops.py), no server.
The YAML is read as an attacker's: bounded in size, nodes and depth, no anchors or aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin_config import gitops
from admin_config.gitops import GitOpsError, ServerState, load, parse_yaml, plan

SEED = (Path(__file__).parents[1] / "testdata"
        / "seed_scep_profile.mobileconfig").read_bytes()
ENV = {"TEST_SCEP_CHALLENGE": "s3cret&<>"}
GOOD = """\
org_settings:
  integrations:
    custom_scep_proxy:
      - name: Test_SCEP
        url: http://ca.example:2016/scep
        challenge: $TEST_SCEP_CHALLENGE
controls:
  macos_settings:
    custom_settings:
      - path: profiles/seed.mobileconfig
"""


def write(tmp_path: Path, text: str | bytes, name: str = "default.yml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "seed.mobileconfig").write_bytes(SEED)
    return path


def problems(tmp_path: Path, text: str | bytes, env=ENV) -> list[str]:
    with pytest.raises(GitOpsError) as refused:
        load(write(tmp_path, text), env)
    return refused.value.problems


def test_a_file_in_fleets_shape_loads(tmp_path):
    source = load(write(tmp_path, GOOD), ENV)
    [ca] = source.certificate_authorities
    assert (ca.name, ca.url, ca.challenge_variable, ca.limits()) == (
        "Test_SCEP", "http://ca.example:2016/scep", "TEST_SCEP_CHALLENGE", (4, None))
    assert source.challenges == {"Test_SCEP": "s3cret&<>"}
    [profile] = source.profiles
    assert profile.path == "profiles/seed.mobileconfig" and profile.raw == SEED
    assert "s3cret" not in repr(source)  # the secret stays out of reprs and logs


def test_limits_and_the_braced_reference(tmp_path):
    text = GOOD.replace("$TEST_SCEP_CHALLENGE", "${TEST_SCEP_CHALLENGE}\n"
                        "        max_concurrent_requests: 8\n        max_issuance_per_second: 2")
    [ca] = load(write(tmp_path, text), ENV).certificate_authorities
    assert ca.limits() == (8, 2.0)


def test_empty_sections_mean_none(tmp_path):
    source = load(write(tmp_path, "org_settings:\ncontrols:\npolicies:\nqueries: []\n"), {})
    assert source.certificate_authorities == [] and source.profiles == []


@pytest.mark.parametrize("challenge, expected", [
    ("s3cret", "must be a reference to an environment variable"),
    ("$NOT_SET", "environment variable NOT_SET is not set"),
    ("$EMPTY", "challenge cannot be empty"),
    ("$FLEET_VAR_CUSTOM_SCEP_CHALLENGE_X", "FLEET_VAR_ variables are the server's"),
    ("x$TEST_SCEP_CHALLENGE", "must be a reference"),
])
def test_a_challenge_is_only_ever_a_set_environment_variable(tmp_path, challenge, expected):
    [problem] = problems(tmp_path, GOOD.replace("$TEST_SCEP_CHALLENGE", challenge),
                         {**ENV, "EMPTY": ""})
    assert f"{CAS}[0].challenge" in problem and expected in problem
    assert "s3cret" not in problem  # a literal challenge is never echoed


CAS = "org_settings.integrations.custom_scep_proxy"


def test_ca_fields_are_checked_as_the_admin_api_checks_them(tmp_path):
    text = GOOD.replace("name: Test_SCEP", "name: bad name").replace(
        "http://ca.example:2016/scep", "ftp://x").replace(
        "challenge: $TEST_SCEP_CHALLENGE",
        "challenge: $TEST_SCEP_CHALLENGE\n        max_concurrent_requests: 0")
    found = problems(tmp_path, text)
    assert any("name: Invalid characters" in p for p in found)
    assert any("url: Custom SCEP Proxy URL must be an http or https URL" in p for p in found)
    assert any("max_concurrent_requests must be an integer from 1 to 1000" in p for p in found)
    twice = GOOD.replace("    custom_scep_proxy:\n", "    custom_scep_proxy:\n"
                         "      - {name: Test_SCEP, url: 'http://b/scep', "
                         "challenge: $TEST_SCEP_CHALLENGE}\n")
    assert any("a second certificate authority named Test_SCEP" in p
               for p in problems(tmp_path, twice))


@pytest.mark.parametrize("key", ["name", "url", "challenge"])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_ca_without_name_url_or_challenge_is_refused(tmp_path, key, how):
    line = {"name": "name: Test_SCEP", "url": "url: http://ca.example:2016/scep",
            "challenge": "challenge: $TEST_SCEP_CHALLENGE"}[key]
    text = GOOD.replace(line, f"{key}:" if how == "null" else "fill: 1")
    found = problems(tmp_path, text)
    assert f"{CAS}[0].{key}: missing" in "\n".join(found)
    assert len(found) == (1 if how == "null" else 2), found  # "fill": an unknown key


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("$TEST_SCEP_CHALLENGE", "$NOT_SET").replace(
        "profiles/seed.mobileconfig", "profiles/missing.mobileconfig") + "extra: 1\n"
    found = problems(tmp_path, text)
    assert len(found) == 3
    assert any("NOT_SET is not set" in p for p in found)
    assert any("profiles/missing.mobileconfig: no such file" in p for p in found)
    assert any("extra: unknown key" in p for p in found)


@pytest.mark.parametrize("text, expected", [
    ("org_settings:\n  server_settings: {}\ncontrols:\n", "org_settings.server_settings: unknown key"),
    ("org_settings:\n  integrations:\n    ndes_scep_proxy: {}\ncontrols:\n",
     "integrations.ndes_scep_proxy: unknown key"),
    ("org_settings:\ncontrols:\n  scripts: []\n", "controls.scripts: unknown key"),
    ("org_settings:\ncontrols:\npolicies:\n  - name: x\n", "policies: not managed by mdmscep"),
    ("controls:\n", "org_settings: missing"),
    ("org_settings:\n", "controls: missing"),
    ("name: Workstations\norg_settings:\ncontrols:\n", "name: Fleet's team files are not supported"),
    ("team_settings: {}\norg_settings:\ncontrols:\n", "team files are not supported"),
    ("labels: {a: 1}\norg_settings:\ncontrols:\n", "labels: must be a list"),
    ("teams: [{name: A, x: 1}]\norg_settings:\ncontrols:\n", "teams[0].x: unknown key"),
    ("teams: [{name: A}, {name: A}, {}]\norg_settings:\ncontrols:\n", "a second team named A"),
    ("teams: [{}]\norg_settings:\ncontrols:\n", "teams[0].name: missing"),
    ("teams: [{name: ''}]\norg_settings:\ncontrols:\n", "teams[0].name: A team needs a name"),
    ("labels: [{name: L, query: SELECT 1}]\norg_settings:\ncontrols:\n",
     "labels[0].query: osquery labels are not supported"),
    ("labels: [{name: L, hosts: [a], criteria: {model: M}}]\norg_settings:\ncontrols:\n",
     "labels[0]: a label is manual (hosts) or dynamic (criteria), not both"),
    ("labels: [{name: L, criteria: {colour: red}}]\norg_settings:\ncontrols:\n",
     "labels[0].criteria: colour: unknown criterion"),
    ("labels: [{name: L, criteria: {os_version_at_least: 14.10}}]\norg_settings:\ncontrols:\n",
     'quote versions: "14.10"'),
    ("labels: [{name: L, label_membership_type: dynamic}]\norg_settings:\ncontrols:\n",
     "labels[0].criteria: missing"),
    ("labels: [{name: L, label_membership_type: manual, criteria: {model: M}}]\n"
     "org_settings:\ncontrols:\n", "a label with criteria is dynamic"),
    ("labels: [{name: L, hosts: [3]}]\norg_settings:\ncontrols:\n",
     "labels[0].hosts[0]: must be a non-empty string"),
    ("labels: [{name: L}, {name: L}]\norg_settings:\ncontrols:\n", "a second label named L"),
    ("org_settings:\ncontrols:\n  macos_settings:\n    custom_settings:\n      - path: 3\n",
     "custom_settings[0].path: must be a non-empty string"),
    ("org_settings:\ncontrols:\n  macos_settings:\n    custom_settings:\n      - {path: x, y: 1}\n",
     "custom_settings[0].y: unknown key"),
    ("org_settings:\n  integrations:\n    custom_scep_proxy: {name: x}\ncontrols:\n",
     "custom_scep_proxy: must be a list"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping"),
])
def test_the_shape_is_checked_key_by_key(tmp_path, text, expected):
    assert any(expected in p for p in problems(tmp_path, text)), problems(tmp_path, text)


@pytest.mark.parametrize("text, expected", [
    ("org_settings: [\ncontrols:\n", "not valid YAML"),
    ("a: &x [1]\nb: *x\n", "anchors and aliases are not accepted"),
    ("a: &x 1\n", "anchors and aliases are not accepted"),
    ("org_settings:\norg_settings:\ncontrols:\n", "key 'org_settings' appears twice"),
    ("a: !!python/object:os.system {}\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
    ("a: [" + "0," * 60_000 + "0]\n", "more than 50000 YAML nodes"),
])
def test_yaml_an_attacker_could_write_is_refused(tmp_path, text, expected):
    [problem] = problems(tmp_path, text)
    assert problem.startswith(str(tmp_path / "default.yml")) and expected in problem


def test_a_billion_laughs_is_refused_at_its_first_alias():
    lol = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    with pytest.raises(GitOpsError, match="anchors and aliases"):
        parse_yaml(lol.encode(), "lol.yml")


def test_a_file_over_one_mib_is_refused_unread(tmp_path):
    [problem] = problems(tmp_path, "# " + "x" * (1 << 20) + "\norg_settings:\ncontrols:\n")
    assert problem == f"GitOps file {tmp_path / 'default.yml'}: over 1048576 bytes"


def test_bytes_that_are_not_text_are_refused(tmp_path):
    [problem] = problems(tmp_path, b"org_settings:\ncontrols: \xff\xfe\x00\n")
    assert "not valid YAML" in problem


def test_profile_paths_are_relative_to_the_file_and_bounded(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.mobileconfig").write_bytes(b"x" * (2 << 20))
    (tmp_path / "profiles" / "dir.mobileconfig").mkdir()
    text = ("org_settings:\ncontrols:\n  macos_settings:\n    custom_settings:\n"
            "      - path: profiles/seed.mobileconfig\n      - path: ./profiles/seed.mobileconfig\n"
            "      - path: profiles/big.mobileconfig\n      - path: profiles/dir.mobileconfig\n")
    found = problems(tmp_path, text)
    assert any("[1].path: ./profiles/seed.mobileconfig is listed twice" in p for p in found)
    assert any("[2].path: profile" in p and "over 2031616 bytes" in p for p in found)
    assert any("[3].path: profile" in p and "not a file" in p for p in found)


SCOPED = """\
org_settings:
  integrations:
    custom_scep_proxy:
      - name: Test_SCEP
        url: http://ca.example:2016/scep
        challenge: $TEST_SCEP_CHALLENGE
teams:
  - name: Engineering
labels:
  - name: Pilot
    hosts: [H-2, H-1, H-2]
  - name: Sonoma
    label_membership_type: dynamic
    criteria: {platform: darwin, os_version_at_least: "14"}
controls:
  macos_settings:
    custom_settings:
      - path: profiles/seed.mobileconfig
        team: Engineering
        labels_include_any: [Pilot, Sonoma]
        labels_exclude_any: [Excluded]
"""


def test_teams_labels_and_profile_scopes_load_where_fleet_puts_them(tmp_path):
    source = load(write(tmp_path, SCOPED), ENV)
    assert source.teams == ["Engineering"]
    assert [(x.name, x.criteria, x.hosts) for x in source.labels] == [
        ("Pilot", None, ("H-1", "H-2")),
        ("Sonoma", {"platform": "darwin", "os_version_at_least": "14"}, ())]
    [profile] = source.profiles
    assert profile.team == "Engineering"
    assert profile.labels == {"labels_include_any": ("Pilot", "Sonoma"),
                              "labels_exclude_any": ("Excluded",)}
    # Without teams and labels the file leaves the server's alone.
    plain = load(write(tmp_path, GOOD), ENV)
    assert (plain.teams, plain.labels) == (None, None)
    both = SCOPED.replace("        labels_exclude_any: [Excluded]\n",
                          "        labels_include_all: [Pilot]\n")
    found = problems(tmp_path, both)
    assert any("only one of labels_include_all and labels_include_any" in p for p in found)
    assert any("label Pilot is in both labels_include_all and labels_include_any" in p
               for p in found)


def test_a_profile_naming_an_unknown_team_or_label_is_refused_before_the_server_changes(
        tmp_path):
    source = load(write(tmp_path, SCOPED), ENV)
    with pytest.raises(GitOpsError) as refused:
        plan(source, ServerState({}, {}), api=None)
    assert refused.value.problems == [
        f"{tmp_path / 'default.yml'}: controls.macos_settings.custom_settings[0] "
        "(profiles/seed.mobileconfig): labels_exclude_any names unknown label(s) Excluded "
        "(not in labels)"]
    # A file without teams and labels names the server's.
    unmanaged = SCOPED[:SCOPED.index("teams:")] + SCOPED[SCOPED.index("controls:"):]
    source = load(write(tmp_path, unmanaged), ENV)
    with pytest.raises(GitOpsError) as refused:
        plan(source, ServerState({}, {}), api=None)
    assert [p.split(": ", 1)[1] for p in refused.value.problems] == [
        "controls.macos_settings.custom_settings[0] (profiles/seed.mobileconfig): names team "
        "Engineering, which is not on the server",
        "controls.macos_settings.custom_settings[0] (profiles/seed.mobileconfig): "
        "labels_include_any names unknown label(s) Pilot, Sonoma (not on the server)",
        "controls.macos_settings.custom_settings[0] (profiles/seed.mobileconfig): "
        "labels_exclude_any names unknown label(s) Excluded (not on the server)"]
    server = ServerState({}, {}, {"Engineering": 1}, {
        name: {"id": i, "name": name, "criteria": None, "hosts": []}
        for i, name in enumerate(("Pilot", "Sonoma", "Excluded"), 1)})
    changes = plan(source, server, api=None).changes
    assert [(c.action, c.kind, c.subject, c.team) for c in changes] == [
        ("add", "certificate authority", "Test_SCEP", None),
        ("add", "profile", "Fleet.custom.SCEP", "Engineering")]
    assert changes[1].request["data"] == {"labels_include_any": ["Pilot", "Sonoma"],
                                          "labels_exclude_any": ["Excluded"]}


def test_a_profile_is_checked_as_the_admin_api_checks_it_and_its_ca_must_be_known(tmp_path):
    other = SEED.replace(b"Test_SCEP", b"Other_CA")
    (tmp_path / "other.mobileconfig").write_bytes(other)
    (tmp_path / "bad.mobileconfig").write_bytes(SEED.replace(b"FLEET_VAR_CUSTOM_SCEP_CHALLENGE_",
                                                             b"FLEET_VAR_NOPE_"))
    text = GOOD + "      - path: other.mobileconfig\n      - path: bad.mobileconfig\n"
    source = load(write(tmp_path, text), ENV)
    with pytest.raises(GitOpsError) as refused:
        plan(source, ServerState({}, {}), api=None)
    found = refused.value.problems
    assert len(found) == 3, found
    assert any("other.mobileconfig): names certificate authority Other_CA, which is neither in "
               f"{CAS} nor on the server" in p for p in found)
    assert any("other.mobileconfig): PayloadIdentifier Fleet.custom.SCEP is also "
               "profiles/seed.mobileconfig's" in p for p in found)
    assert any("bad.mobileconfig): Unknown Fleet variable $FLEET_VAR_NOPE_Test_SCEP" in p
               for p in found)
    # A CA only the server has is known.
    server = ServerState({"Other_CA": {"id": 1, "name": "Other_CA"}}, {})
    only_other = GOOD.replace("seed.mobileconfig", "../other.mobileconfig")
    changes = plan(load(write(tmp_path, only_other), ENV), server, api=None).changes
    assert [(c.action, c.kind, c.subject) for c in changes] == [
        ("add", "certificate authority", "Test_SCEP"), ("add", "profile", "Fleet.custom.SCEP")]


def test_export_file_names_are_plain_and_unique():
    taken: set[str] = set()
    names = [gitops.profile_file_name(i, taken) for i in
             ("com.x.wifi", "COM.X.WIFI", "../../etc/passwd", "...", "a/b\x1b[2J")]
    assert names == ["com.x.wifi.mobileconfig", "COM.X.WIFI-2.mobileconfig",
                     "_.._etc_passwd.mobileconfig", "profile.mobileconfig",
                     "a_b__2J.mobileconfig"]
    variables: set[str] = set()
    assert [gitops.challenge_variable(n, variables) for n in ("ca", "CA", "CA_2", "Test_SCEP")] \
        == ["MDMSCEP_CA_CA_CHALLENGE", "MDMSCEP_CA_CA_2_CHALLENGE", "MDMSCEP_CA_CA_2_2_CHALLENGE",
            "MDMSCEP_CA_TEST_SCEP_CHALLENGE"]
