"""`make run`'s launcher: migrations once, every service healthy, a killed process restarted,
and the CA slice end to end over real processes (HTTP → gRPC → scepserver)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psycopg
import pytest

from mdmscep_common.db import drop_database
from tests.conftest import ADMIN_TOKEN, PG_BASE, RUN_ID
from tests.support.stack import start_stack

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_database_url():
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_launch"
    drop_database(url)
    yield url
    drop_database(url)


def test_two_launchers_on_one_database_migrate_once_and_serve(base_env, fresh_database_url,
                                                              tmp_path, custom_ca):
    env = {**base_env, "DATABASE_URL": fresh_database_url}
    stacks = [start_stack(env, tmp_path / name) for name in ("a", "b")
              if (tmp_path / name).mkdir() is None]
    try:
        for stack in stacks:
            stack.wait_healthy()
        with psycopg.connect(fresh_database_url) as conn:
            applied = conn.execute("SELECT migration_id, count(*) FROM _yoyo_migration "
                                   "GROUP BY migration_id").fetchall()
        assert applied and all(count == 1 for _, count in applied)
        logs = [stack.log() for stack in stacks]
        assert sorted(log.count("migration(s) applied") for log in logs) == [1, 1]
        assert any("launcher: 0 migration(s) applied" in log for log in logs)

        # The slice over real processes: admin-config → gRPC ScepGateway → real scepserver.
        a, b = stacks
        response = httpx.post(
            a.admin_url + "/api/v1/fleet/certificate_authorities",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=40,
            json={"custom_scep_proxy": {"name": "Live_CA", "url": custom_ca.url,
                                        "challenge": "live-challenge-9"}})
        assert response.status_code == 200, response.text
        listing = httpx.get(b.admin_url + "/api/v1/fleet/certificate_authorities",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        assert {"id": response.json()["id"], "name": "Live_CA", "type": "custom_scep_proxy"} in \
            listing.json()["certificate_authorities"]
        assert "live-challenge-9" not in a.log() + b.log()
    finally:
        for stack in stacks:
            stack.stop()
    for stack in stacks:
        assert stack.process.returncode is not None


def test_a_killed_service_process_is_restarted(base_env, fresh_database_url, tmp_path):
    stack = start_stack({**base_env, "DATABASE_URL": fresh_database_url}, tmp_path)
    try:
        stack.wait_healthy()
        # Killed at once, each restarted on its own: supervisord counts a program running only
        # 3 s after its start (startsecs), which one kill after another waited three times.
        old = {program: stack.pid(program)
               for program in ("admin-config", "profile-processor", "scep-proxy-grpc")}
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)
        waiting = set(old)
        deadline = time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            for program in sorted(waiting):
                out = stack.supervisorctl("status", program)
                if "RUNNING" in out and stack.pid(program) not in (0, old[program]):
                    waiting.discard(program)
            time.sleep(0.3)
        if waiting:
            pytest.fail(f"{sorted(waiting)} not restarted:\n{stack.log()[-3000:]}")
        stack.wait_healthy(timeout=30)
        assert stack.log().count("not expected") >= 3  # each restart is logged
    finally:
        stack.stop()


def test_missing_server_private_key_stops_start_up(base_env, tmp_path):
    env = {k: v for k, v in base_env.items() if k != "SERVER_PRIVATE_KEY"}
    stack = start_stack({**env, "SERVER_PRIVATE_KEY": ""}, tmp_path)
    assert stack.process.wait(30) == 78
    assert "SERVER_PRIVATE_KEY is required" in stack.log()
