"""`make demo`: the product's main job on this machine, end to end, then everything cleaned up.

Starts a real SCEP CA for the admin (micromdm scepserver), an identity CA, an HTTP/2 fake APNs,
the stack with the same launcher as `make run` (throw-away database and RabbitMQ vhost), and 5
simulated Macs. Then it does what an admin does: saves the custom CA, uploads the seed's sample
profile, and waits while every Mac gets its own copy, fetches a certificate through the SCEP
proxy with the real scepclient, and is verified. Ctrl-C cleans up too.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
PG_BASE = os.environ.get("DEMO_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("DEMO_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
SEED_PROFILE = ROOT / "tests/testdata/seed_scep_profile.mobileconfig"
HOSTS = int(os.environ.get("DEMO_HOSTS", "5"))
PORT_VARS = ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT", "PROCESSOR_GRPC_PORT",
             "MDM_GRPC_PORT", "SCEP_PROXY_GRPC_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def wait_until(check, what: str, timeout: float = 90, every: float = 1.0, quiet: bool = False):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        if not quiet:
            print(f"    waiting for {what} ...", flush=True)
        time.sleep(every)
    raise SystemExit(f"demo: {what} did not happen within {timeout:g} s")


class Demo:
    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="mdmscep-demo-"))
        self.processes: list[subprocess.Popen] = []
        self.vhost = f"mdmscep_demo_{self.run_id}"
        self.database_url = f"{PG_BASE}/mdmscep_demo_{self.run_id}"
        self.apns = None
        self.fleet = None

    def start_scepserver(self, name: str, challenge: str, organization: str) -> str:
        depot = self.workdir / name
        subprocess.run(["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048",
                        "-organization", organization], check=True, capture_output=True)
        port = free_port()
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes.append(subprocess.Popen(
            ["scepserver", "-depot", str(depot), "-port", str(port), "-challenge", challenge,
             "-allowrenew", "0"], stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}/scep"
        wait_until(lambda: httpx.get(url + "?operation=GetCACaps", timeout=2).status_code == 200,
                   name, quiet=True, every=0.2)
        return url

    def start_stack(self, env_extra: dict[str, str]) -> dict[str, str]:
        for args in (["add_vhost", self.vhost],
                     ["set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)
        env = {**os.environ, "DATABASE_URL": self.database_url,
               "AMQP_URL": f"{AMQP_BASE}/{self.vhost}",
               "SERVER_PRIVATE_KEY": "demo-" + uuid.uuid4().hex + uuid.uuid4().hex,
               "HTTP_WORKERS": "1", "MDMSCEP_RUN_DIR": str(self.workdir / "run"),
               "PROFILE_RECONCILE_INTERVAL": "5", "PROFILE_RETRY_BACKOFF": "1", **env_extra}
        for var in PORT_VARS:
            env[var] = str(free_port())
        env["MDM_PUBLIC_URL"] = f"http://127.0.0.1:{env['MDM_HTTP_PORT']}"
        env["SCEP_PROXY_PUBLIC_URL"] = f"http://127.0.0.1:{env['SCEP_PROXY_HTTP_PORT']}"
        # Append mode: supervisord's programs write here through descriptors of their own, which
        # would otherwise overwrite each other's lines.
        log = (self.workdir / "stack.log").open("ab")
        self.processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "deploy/local/launcher.py")], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))
        for var in ("ADMIN_HTTP_PORT", "MDM_HTTP_PORT", "SCEP_PROXY_HTTP_PORT"):
            url = f"http://127.0.0.1:{env[var]}/healthz"
            wait_until(lambda u=url: httpx.get(u, timeout=2).status_code == 200, url)
        return env

    def cleanup(self) -> None:
        if self.apns:
            self.apns.stop()
        if self.fleet:
            self.fleet.close()
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
        from hostsim.device import SimulatedHost
        from hostsim.fleet import Fleet, start_fake_apns
        from hostsim.pki import make_apns_pki

        token = "demo-token-" + self.run_id
        challenge = "demo-challenge-" + self.run_id
        step("Starting the admin's SCEP CA and the device identity CA (micromdm scepserver)")
        custom_url = self.start_scepserver("custom-ca", challenge, "Demo Custom SCEP CA")
        identity_url = self.start_scepserver("identity-ca", "identity-" + self.run_id,
                                             "Demo Identity CA")
        print(f"    custom CA {custom_url}\n    identity CA {identity_url}")
        step("Starting a local HTTP/2 fake APNs and the stack (the `make run` launcher)")
        pki = make_apns_pki(self.workdir / "apns")
        self.fleet = Fleet("http://unused", 0, self.workdir / "hosts", workers=5)
        self.apns = start_fake_apns(pki, self.fleet)
        env = self.start_stack({
            "ADMIN_API_TOKEN": token, "ENROLL_SECRET": "enroll-" + self.run_id,
            "IDENTITY_SCEP_URL": identity_url, "IDENTITY_SCEP_CHALLENGE": "identity-" + self.run_id,
            "MDM_IDENTITY_CA_CERTS": str(self.workdir / "identity-ca" / "ca.pem"),
            "APNS_URL": self.apns.url, "APNS_CERT": str(pki.push_cert),
            "APNS_KEY": str(pki.push_key), "APNS_CA_CERTS": str(pki.server_ca)})
        admin_url = f"http://127.0.0.1:{env['ADMIN_HTTP_PORT']}"
        api = httpx.Client(base_url=f"{admin_url}/api/v1/fleet",
                           headers={"Authorization": f"Bearer {token}"}, timeout=60)
        print(f"    admin API {admin_url}, MDM {env['MDM_PUBLIC_URL']}, "
              f"SCEP proxy {env['SCEP_PROXY_PUBLIC_URL']}")

        step(f"Enrolling {HOSTS} simulated Macs (identity certificates from the identity CA)")
        hosts = [SimulatedHost(env["MDM_PUBLIC_URL"], serial_number=f"C02DEMO{i:05d}",
                               workdir=self.workdir / "hosts", client=self.fleet.client)
                 for i in range(HOSTS)]
        for host in hosts:
            self.fleet.add_host(host)
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda h: h.enroll("enroll-" + self.run_id), hosts))
        print(f"    {len(hosts)} hosts enrolled")

        step("Admin saves the custom SCEP CA (the proxy runs GetCACert against it)")
        created = api.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": "Test_SCEP", "url": custom_url, "challenge": challenge}})
        print(f"    POST /certificate_authorities -> {created.status_code} {created.json()}")
        if created.status_code != 200:
            raise SystemExit("demo: the CA was refused")

        step("Admin uploads the seed's sample SCEP profile, unchanged")
        uploaded = api.post("/configuration_profiles",
                            files={"profile": ("scep.mobileconfig", SEED_PROFILE.read_bytes())})
        print(f"    POST /configuration_profiles -> {uploaded.status_code} {uploaded.json()}")
        profile_uuid = uploaded.json()["profile_uuid"]

        step("Hosts get their own copy on Idle, enroll through the SCEP proxy, and are verified")

        def progress():
            counts: dict[str, int] = {}
            for host in hosts:
                row = next((p for p in api.get(f"/hosts/{host.udid}/configuration_profiles")
                            .json()["profiles"] if p["profile_uuid"] == profile_uuid), None)
                counts[row["status"] if row else "not yet"] = counts.get(
                    row["status"] if row else "not yet", 0) + 1
            print("    " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
            return counts.get("verified") == len(hosts) or counts.get("failed")
        wait_until(progress, "every host verified", timeout=150, every=2, quiet=True)

        step("Result")
        rows = []
        for host in hosts:
            row = next(p for p in api.get(f"/hosts/{host.udid}/configuration_profiles")
                       .json()["profiles"] if p["profile_uuid"] == profile_uuid)
            certs = host.profiles.get("Fleet.custom.SCEP")
            cert = certs.certificates[0] if certs and certs.certificates else None
            rows.append((host.serial_number, row["status"],
                         cert.subject.rfc4514_string() if cert else "-",
                         _cn(cert.issuer) if cert else "-",
                         cert.not_valid_after_utc.strftime("%Y-%m-%d") if cert else "-"))
        header = ("HOST", "PROFILE STATUS", "CERTIFICATE SUBJECT", "ISSUER", "EXPIRES")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("    " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
        if any(r[1] != "verified" for r in rows):
            raise SystemExit("demo: not every host was verified (see the table)")
        print("\nDone: every host holds a certificate from the admin's CA, fetched through the "
              "proxy.\nNext: `make run` keeps the stack up; README.md shows the admin API and the "
              "`mdmscep` CLI; `make test` runs the suite.")


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME) or \
        name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def main() -> None:
    if shutil.which("scepserver") is None or shutil.which("scepclient") is None:
        raise SystemExit("demo: scepserver/scepclient missing; run `make scep`")
    demo = Demo()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    started = time.monotonic()
    try:
        demo.run()
    except KeyboardInterrupt:
        print("\ndemo: interrupted, cleaning up")
        raise SystemExit(130) from None
    finally:
        step("Cleaning up (stack, scepservers, fake APNs, database, vhost)")
        demo.cleanup()
        print(f"    done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
