"""The `mdmscep` admin CLI against the admin API on a real port."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SERVER_PRIVATE_KEY

SEED = Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig"
WIFI = """<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
  <key>PayloadContent</key><array><dict>
    <key>PayloadType</key><string>com.apple.wifi.managed</string>
    <key>PayloadIdentifier</key><string>com.example.cli.wifi</string>
    <key>PayloadUUID</key><string>3C0E6C6E-0000-4000-8000-0000000000C3</string>
    <key>PayloadVersion</key><integer>1</integer>
    <key>SSID_STR</key><string>office</string>
  </dict></array>
  <key>PayloadDisplayName</key><string>Office Wi-Fi</string>
  <key>PayloadIdentifier</key><string>com.example.cli</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>3C0E6C6E-0000-4000-8000-0000000000C4</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict></plist>
"""


def test_admin_flow_through_the_cli(cli, custom_ca):
    code, out = cli("ca", "add", "Test_SCEP", "--url", custom_ca.url, "--challenge-stdin",
                    stdin="custom-ca-challenge\n")
    assert code == 0 and "added certificate authority Test_SCEP" in out
    code, out = cli("ca", "list")
    assert "Test_SCEP" in out and out.splitlines()[0].split() == ["ID", "NAME", "TYPE"]
    code, out = cli("profile", "upload", str(SEED))
    assert code == 0 and "profile_uuid" in out
    code, out = cli("profile", "list")
    assert "Fleet.custom.SCEP" in out
    code, out = cli("activity", "list")
    assert "created_configuration_profile" in out and "custom-ca-challenge" not in out


def test_cli_errors_are_readable(cli):
    code, out = cli("ca", "add", "bad name", "--url", "http://x/scep", "--challenge-stdin",
                    stdin="c\n")
    assert "mdmscep: 422: " in str(code) and "Only letters, numbers and underscores" in str(code)
    code, _ = cli("host", "profiles", "no-such-host")
    assert "404" in str(code)


def test_tokens_json_and_filters(cli, custom_ca):

    code, out = cli("token", "create", "automation")
    assert code == 0 and "shown once" in out and "mdmscep_" in out
    code, out = cli("--json", "token", "list")
    assert [t["name"] for t in json.loads(out)["api_tokens"]] == ["automation"]
    cli("ca", "add", "Test_SCEP", "--url", custom_ca.url, "--challenge-stdin",
        stdin="custom-ca-challenge\n")
    code, out = cli("--json", "ca", "list")
    assert json.loads(out)["meta"]["total"] == 1
    code, out = cli("activity", "list", "--type", "created_api_token")
    assert "automation" in out and "added_custom_scep_proxy" not in out
    code, out = cli("host", "list", "--query", "nothing-matches")
    assert code == 0 and "(none)" in out
    code, out = cli("token", "revoke", "automation")
    assert code == 0 and "revoked automation" in out


def test_token_roles_through_the_cli(cli):
    code, out = cli("token", "create", "reader")  # the API's default: observer
    assert code == 0 and out.splitlines()[0] == "observer token for reader (shown once):"
    reader = out.splitlines()[1]
    code, out = cli("token", "create", "editor", "--role", "maintainer")
    assert code == 0 and out.startswith("maintainer token for editor")
    editor = out.splitlines()[1]
    code, out = cli("token", "list")
    assert out.splitlines()[0].split()[:2] == ["NAME", "ROLE"]
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["reader", "observer"],
                                                                   ["editor", "maintainer"]]
    # A call beyond the token's role: the API's 403, naming the role it needs.
    code, out = cli("token", "create", "mine", "--role", "admin", token=editor)
    assert code == "mdmscep: 403: This call needs the admin role (role: needs admin; this " \
                   "token is maintainer)"
    code, out = cli("profile", "delete", "any", token=reader)
    assert "403: This call needs the maintainer role" in str(code)
    code, out = cli("host", "list", token=reader)
    assert code == 0 and "(none)" in out
    code, out = cli("--json", "token", "list", token=reader)
    assert "mine" not in out and "token" not in json.loads(out)["api_tokens"][0]
    code, out = cli("token", "create", "x", "--role", "root")
    assert code == 2 and "invalid choice: 'root'" in out  # argparse: not a role


def test_admin_config_tokens_take_a_role(clean_state, database_url, monkeypatch, capsys):
    """The server-side CLI (`admin-config tokens`): admin by default, as before roles."""
    import sys

    from admin_config import main as admin_config_main

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SERVER_PRIVATE_KEY", SERVER_PRIVATE_KEY)

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["admin-config", "tokens", *args])
        admin_config_main.main()
        return capsys.readouterr()

    made = run("create", "ops")
    assert made.out.startswith("mdmscep_") and made.out.count("\n") == 1  # the token alone
    assert made.err == "role: admin\n"
    assert run("create", "dashboard", "--role", "observer").err == "role: observer\n"
    listed = [line.split("\t")[:3] for line in run("list").out.splitlines()]
    assert listed == [["ops", "admin", "active"], ["dashboard", "observer", "active"]]


def test_teams_labels_and_scoped_profiles_through_the_cli(cli, mdm_db, tmp_path):
    with mdm_db.transaction() as conn:
        conn.execute("INSERT INTO hosts (uuid, serial_number, enrolled) VALUES "
                     "('CLI-1', 'C0CLI1', true), ('CLI-2', 'C0CLI2', true)")
    code, out = cli("team", "create", "Engineering")
    assert code == 0 and out.startswith("created team Engineering (id ")
    team_id = out.split("(id ")[1].split(")")[0]
    code, out = cli("teams", "list")  # the plural spelling too
    assert out.splitlines()[0].split() == ["ID", "NAME", "HOST_COUNT"] and "Engineering" in out
    code, out = cli("host", "transfer", "--team", team_id, "CLI-1", "CLI-2")
    assert code == 0 and out.startswith(f"moved 2 of 2 host(s) to team {team_id}")
    code, out = cli("host", "transfer", "--no-team", "CLI-2")
    assert code == 0 and "moved 1 of 1 host(s) to no team" in out
    code, out = cli("host", "transfer", "--team", team_id, "NOPE")
    assert "400: Unknown host(s): NOPE" in str(code)
    code, out = cli("--json", "host", "list", "--team", team_id)
    assert [(h["uuid"], h["team_id"]) for h in json.loads(out)["hosts"]] == [("CLI-1",
                                                                              int(team_id))]
    code, out = cli("label", "create", "Pilot", "--host", "CLI-1", "--host", "CLI-2")
    assert code == 0 and out.startswith("created manual label Pilot (id ")
    pilot = out.split("(id ")[1].split(")")[0]
    code, out = cli("label", "create", "Sonoma", "--criteria", "platform=darwin",
                    "--criteria", "os_version_at_least=14")
    assert code == 0 and "created dynamic label Sonoma" in out
    code, out = cli("label", "create", "Bad", "--criteria", "colour=red")
    assert "400: Invalid criteria" in str(code) and "criteria.colour" in str(code)
    code, out = cli("label", "set-hosts", pilot, "CLI-2")
    assert code == 0 and "label Pilot now has 1 host(s)" in out
    code, out = cli("labels", "list")
    assert "os_version_at_least=14" in out and "manual" in out
    wifi = tmp_path / "wifi.mobileconfig"
    wifi.write_text(WIFI)
    code, out = cli("profile", "upload", str(wifi), "--team", team_id, "--include-any", "Pilot",
                    "--exclude-any", "Nope")
    assert "400: Unknown label(s) in labels_exclude_any: Nope" in str(code)
    code, out = cli("profile", "upload", str(wifi), "--include-all", "Pilot", "--include-any", "X")
    assert code == 2 and "not allowed with argument" in out  # argparse: one include kind
    code, out = cli("profile", "upload", str(wifi), "--team", team_id, "--include-any", "Pilot",
                    "--include-any", "Sonoma")
    assert code == 0 and "uploaded wifi.mobileconfig" in out
    code, out = cli("--json", "profiles", "list", "--team", team_id)
    [shown] = json.loads(out)["profiles"]
    assert (shown["team_id"], shown["labels_include_any"]) == (int(team_id), ["Pilot", "Sonoma"])
    code, out = cli("label", "delete", pilot)
    assert "409: Label Pilot is used by 1 profile(s)" in str(code)
    code, out = cli("profile", "list", "--team", "0")
    assert code == 0 and "(none)" in out
    code, out = cli("team", "delete", team_id)
    assert code == 0 and "its hosts are in no team" in out
    code, out = cli("label", "delete", pilot)  # its profile went with its team
    assert code == 0 and f"deleted label {pilot}" in out
    code, out = cli("--json", "activity", "list")
    types = [a["type"] for a in json.loads(out)["activities"]]
    assert {"created_team", "transferred_hosts", "created_label", "edited_label",
            "deleted_label", "deleted_team"} <= set(types)
