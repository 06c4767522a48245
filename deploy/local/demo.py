"""`make demo`: the product's main job on this machine, end to end, then everything cleaned up.

Starts a real SCEP CA (micromdm scepserver), the stack with the same launcher as `make run`
(against a throw-away database and RabbitMQ vhost), and does what an admin does in the seed's
first diagram: register the CA (the proxy probes it with GetCACert), read it back, change its
challenge, and read the activity feed. The host half (enrollment, profiles, certificates) joins
this demo as those services land.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BASE = os.environ.get("DEMO_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("DEMO_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        print(f"    waiting for {what} ...", flush=True)
        time.sleep(1)
    raise SystemExit(f"demo: {what} did not come up within {timeout:g} s")


class Demo:
    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="mdmscep-demo-"))
        self.processes: list[subprocess.Popen] = []
        self.vhost = f"mdmscep_demo_{self.run_id}"
        self.database_url = f"{PG_BASE}/mdmscep_demo_{self.run_id}"

    def start_scepserver(self, challenge: str) -> str:
        depot = self.workdir / "ca-depot"
        subprocess.run(["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048",
                        "-organization", "Demo Custom SCEP CA"], check=True, capture_output=True)
        port = free_port()
        log = (self.workdir / "scepserver.log").open("wb")
        self.processes.append(subprocess.Popen(
            ["scepserver", "-depot", str(depot), "-port", str(port), "-challenge", challenge,
             "-allowrenew", "0"], stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}/scep"
        wait_until(lambda: httpx.get(url + "?operation=GetCACaps", timeout=2).status_code == 200,
                   "scepserver")
        return url

    def start_stack(self, token: str) -> dict[str, str]:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True,
                       capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*",
                        ".*", ".*"], check=True, capture_output=True)
        env = {**os.environ, "DATABASE_URL": self.database_url,
               "AMQP_URL": f"{AMQP_BASE}/{self.vhost}",
               "SERVER_PRIVATE_KEY": "demo-" + uuid.uuid4().hex + uuid.uuid4().hex,
               "ADMIN_API_TOKEN": token, "HTTP_WORKERS": "1",
               "MDMSCEP_RUN_DIR": str(self.workdir / "run")}
        for var in ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT",
                    "PROCESSOR_GRPC_PORT", "MDM_GRPC_PORT", "SCEP_PROXY_GRPC_PORT"):
            env[var] = str(free_port())
        log = (self.workdir / "stack.log").open("wb")
        self.processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "deploy/local/launcher.py")], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))
        for var in ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT"):
            url = f"http://127.0.0.1:{env[var]}/healthz"
            wait_until(lambda u=url: httpx.get(u, timeout=2).status_code == 200, url)
        return env

    def cleanup(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(40)
                except subprocess.TimeoutExpired:
                    process.kill()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True)
        try:
            from mdmscep_common.db import drop_database
            drop_database(self.database_url)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            print(f"demo: could not drop {self.database_url}: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run(self) -> None:
        token = "demo-token-" + self.run_id
        challenge = "demo-challenge-" + self.run_id
        step("Starting a real SCEP CA (micromdm scepserver -allowrenew 0)")
        scep_url = self.start_scepserver(challenge)
        print(f"    custom CA at {scep_url}")
        step("Starting the stack with the `make run` launcher (throw-away database and vhost)")
        env = self.start_stack(token)
        api = httpx.Client(base_url=f"http://127.0.0.1:{env['ADMIN_HTTP_PORT']}/api/v1/fleet",
                           headers={"Authorization": f"Bearer {token}"}, timeout=40)
        print(f"    admin API at {api.base_url}")

        step("Admin saves the custom SCEP CA (the proxy runs GetCACert against it)")
        created = api.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": "Demo_SCEP", "url": scep_url, "challenge": challenge}})
        print(f"    POST /certificate_authorities -> {created.status_code} {created.json()}")
        if created.status_code != 200:
            raise SystemExit("demo: the CA was refused")
        ca_id = created.json()["id"]
        refused = api.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": "Broken", "url": f"http://127.0.0.1:{free_port()}/scep", "challenge": "x"}})
        print(f"    a CA at a dead URL is refused -> {refused.status_code} "
              f"{refused.json()['message']} ({refused.json()['errors'][0]['reason']})")

        step("Admin reads it back: the challenge is stored encrypted and never shown")
        print(f"    {api.get(f'/certificate_authorities/{ca_id}').json()}")
        edited = api.patch(f"/certificate_authorities/{ca_id}",
                           json={"custom_scep_proxy": {"challenge": challenge}})
        print(f"    PATCH (same challenge) -> {edited.status_code}")

        step("Activity feed")
        for activity in api.get("/activities").json()["activities"]:
            print(f"    {activity['created_at']}  {activity['type']:<28} by {activity['actor']}"
                  f"  {activity['details']}")
        print("\nDone. Next: `make run` to keep the stack up; README.md for the admin API.")


def main() -> None:
    if shutil.which("scepserver") is None:
        raise SystemExit("demo: scepserver missing; run `make scep`")
    demo = Demo()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        demo.run()
    except KeyboardInterrupt:
        print("\ndemo: interrupted, cleaning up")
        raise SystemExit(130) from None
    finally:
        step("Cleaning up (stack, scepserver, database, vhost)")
        demo.cleanup()


if __name__ == "__main__":
    main()
