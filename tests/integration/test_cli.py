"""The `mdmscep` admin CLI against the admin API on a real port."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from admin_config.cli import main
from tests.conftest import ADMIN_TOKEN
from tests.support.mdm import ServerThread
from tests.support.ports import free_port

SEED = Path(__file__).parent / "testdata" / "seed_scep_profile.mobileconfig"


@pytest.fixture
def cli(live_admin_app, capsys):
    server = ServerThread(live_admin_app, free_port()).start()

    def run(*args, stdin: str = ""):
        import sys
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            main(["--server", server.url, "--token", ADMIN_TOKEN, *args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stdin = old
        out = capsys.readouterr()
        return code, out.out + (out.err if isinstance(code, int) else str(code))
    yield run
    server.stop()


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
    import json

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
