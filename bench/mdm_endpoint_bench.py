"""Benchmark: signed MDM requests per second through the real mdm-endpoint (gunicorn), with
p50/p99 latency, at several concurrencies: `Idle` (the host asks for its next command) and
`Acknowledged` (the host reports a command's result: stored, published as command.result on a
throw-away RabbitMQ vhost, then the next command is looked up). Bodies are signed before the
clock starts; each simulated host has its own RSA-2048 identity certificate.

Run with `make bench` (or `.venv/bin/python bench/mdm_endpoint_bench.py --concurrency 10 50`).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import platform
import plistlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from benchlib import (
    CpuMeter,
    Profile,
    add_common_arguments,
    child_pids,
    free_port,
    load_average,
    rabbitmqctl,
    write_json,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from mdm_endpoint.settings import DEFAULT_MDM_HTTP_THREADS
from mdmscep_common import mdm_commands
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
KINDS = ("Idle", "Acknowledged")
PROFILE_SECONDS = 4


def _identity_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench identity CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _device(ca_cert, ca_key, udid):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, udid)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    return cert, key


def _signed(cert, key, message: dict) -> tuple[bytes, str]:
    body = plistlib.dumps(message)
    signature = (pkcs7.PKCS7SignatureBuilder().set_data(body).add_signer(cert, key, hashes.SHA256())
                 .sign(serialization.Encoding.DER,
                       [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
    return body, base64.b64encode(signature).decode()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_level(url: str, requests: list[tuple[bytes, str]], concurrency: int, seconds: float):
    """Python threads as load generator (when wrk is missing): slower, it shares the CPU."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        local = []
        with httpx.Client(timeout=30) as client:
            i = index
            while time.monotonic() < stop_at:
                body, signature = requests[i % len(requests)]
                i += concurrency
                started = time.perf_counter()
                response = client.put(url, content=body, headers={"Mdm-Signature": signature})
                local.append(time.perf_counter() - started)
                if response.status_code != 200:
                    with lock:
                        errors[0] += 1
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors[0],
            "rps": len(latencies) / elapsed, "p50_ms": _percentile(latencies, 0.5) * 1000,
            "p99_ms": _percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000}


def _lua_requests(requests: list[tuple[bytes, str]], path: Path) -> None:
    """A wrk script that sends the pre-signed bodies round-robin."""
    lines = ["local reqs = {}"]
    for body, signature in requests:
        text = body.decode()
        assert "]==]" not in text
        lines.append(f'reqs[#reqs + 1] = {{body = [==[{text}]==], sig = "{signature}"}}')
    lines.append("local n = 0")
    lines.append("request = function()\n  n = n + 1\n  local r = reqs[(n % #reqs) + 1]\n"
                 '  return wrk.format("PUT", "/mdm/connect", {["Mdm-Signature"] = r.sig}, r.body)\nend')
    path.write_text("\n".join(lines) + "\n")


def run_level_wrk(url: str, script: Path, concurrency: int, seconds: float) -> dict:
    """wrk (C) as load generator: it leaves the CPU to the server, unlike Python threads."""
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                              out)

    def pct(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    mean_value, mean_unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out).groups()
    return {"concurrency": concurrency, "requests": total,
            "errors": (int(errors.group(1)) if errors else 0)
            + (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0),
            "rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"),
            "mean_ms": float(mean_value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean_unit]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker (default: the product's MDM_HTTP_THREADS default)")
    parser.add_argument("--threads-sweep", type=int, nargs="*", default=[],
                        help="also measure these threads per worker at 50 hosts (a server each)")
    parser.add_argument("--load", choices=["wrk", "python"], default="wrk" if shutil.which("wrk")
                        else "python", help="load generator (wrk is Debian's package wrk)")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = DEFAULT_MDM_HTTP_THREADS

    run_id = uuid.uuid4().hex[:8]
    database_url = f"{PG_BASE}/mdmscep_bench_{run_id}"
    vhost = f"mdmscep_bench_{run_id}"
    ensure_database(database_url)
    apply_migrations(database_url)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-"))
    process = None
    results: list[dict] = []
    sweep: list[dict] = []  # other threads per worker, at 50 hosts
    started_load = load_average()
    try:
        ca_cert, ca_key = _identity_ca()
        (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        hosts, commands = [], []
        requests: dict[str, list[tuple[bytes, str]]] = {kind: [] for kind in KINDS}
        for _ in range(args.hosts):
            udid = str(uuid.uuid4()).upper()
            cert, key = _device(ca_cert, ca_key, udid)
            fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
            hosts.append((udid, fingerprint))
            command_uuid = mdm_commands.new_command_uuid()
            commands.append((udid, command_uuid, mdm_commands.PROFILE_LIST,
                             mdm_commands.profile_list(command_uuid)))
            requests["Idle"].append(_signed(cert, key, {"Status": "Idle", "UDID": udid}))
            requests["Acknowledged"].append(_signed(cert, key, {
                "Status": "Acknowledged", "UDID": udid, "CommandUUID": command_uuid}))
        db = Database(database_url).open()
        with db.transaction() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO hosts (uuid, identity_cert_sha256, enrolled) "
                            "VALUES (%s, %s, true)", hosts)
            # Each host's command was delivered: Acknowledged stores its result (again and
            # again, as the same bodies are replayed) and publishes command.result.
            cur.executemany("INSERT INTO commands (host_uuid, command_uuid, request_type, payload, "
                            "status, delivered_at) VALUES (%s, %s, %s, %s, 'acknowledged', now())",
                            commands)
        db.close()
        def start_server(threads: int) -> tuple[subprocess.Popen, str]:
            port = free_port()
            env = {**os.environ, "DATABASE_URL": database_url, "MDM_HTTP_PORT": str(port),
                   "AMQP_URL": f"{AMQP_BASE}/{vhost}", "HTTP_BIND_ADDRESS": "127.0.0.1",
                   "SERVER_PRIVATE_KEY": "bench-" + "k" * 40,
                   "MDM_IDENTITY_CA_CERTS": str(workdir / "ca.pem"),
                   "HTTP_WORKERS": str(args.workers), "MDM_HTTP_THREADS": str(threads)}
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            server = subprocess.Popen([str(BIN / "mdm-endpoint"), "http"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("mdm-endpoint did not start")
                time.sleep(0.2)
            address = f"http://127.0.0.1:{port}/mdm/connect"
            for kind in KINDS:
                # Warm-up: every worker's pools, caches and lazily built parsers.
                warm = run_level(address, requests[kind], 4, 1.0)
                if warm["errors"]:
                    raise SystemExit(f"{kind}: {warm['errors']} requests failed in the warm-up")
            return server, address

        scripts = {}
        for kind in KINDS:
            scripts[kind] = workdir / f"{kind}.lua"
            _lua_requests(requests[kind], scripts[kind])
        process, url = start_server(args.threads)

        def level(kind: str, concurrency: int, seconds: float) -> dict:
            if args.load == "wrk":
                return run_level_wrk(url, scripts[kind], concurrency, seconds)
            return run_level(url, requests[kind], concurrency, seconds)

        def measure(kind: str, concurrency: int, threads: int) -> dict:
            load = load_average()
            meter = CpuMeter({"mdm_endpoint": [process.pid, *child_pids(process.pid)]},
                             database_url).start()
            r = level(kind, concurrency, args.seconds)
            cpu = meter.stop()
            r = {"kind": kind, **r, "threads": threads, "load_average": load, "cpu_seconds": cpu,
                 "cpu_seconds_system": meter.system, "seconds": args.seconds}
            r.update({k: round(v, 2) for k, v in r.items() if isinstance(v, float)})
            print(f"{kind:>12} {r['concurrency']:>11} {threads:>7} {r['requests']:>9} "
                  f"{r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6}  "
                  f"{', '.join(f'{k} {v:.1f} ({meter.system[k]:.1f} sys)' for k, v in cpu.items())}"
                  f" (load {load[0]})", flush=True)
            return r

        print(f"# mdm-endpoint: signed requests ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, gunicorn {args.workers} workers x {args.threads} threads, "
              f"{args.hosts} hosts, load generator {args.load} on the same machine; "
              f"load {started_load[0]})")
        print(f"{'kind':>12} {'concurrency':>11} {'threads':>7} {'requests':>9} {'req/s':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  CPU s")
        for kind in args.kinds:
            for concurrency in args.concurrency:
                results.append(measure(kind, concurrency, args.threads))
        if args.profile_dir:  # separate, so that sampling does not touch the figures above
            for kind in args.kinds:
                with Profile(args.profile_dir, f"mdm-{kind.lower()}", [process.pid],
                             subprocesses=True, gil=True):
                    level(kind, 50, PROFILE_SECONDS)
        # Threads per worker: the same load on a server started with each other setting.
        for threads in [t for t in args.threads_sweep if t != args.threads]:
            process.terminate()
            process.wait(30)
            process, url = start_server(threads)
            for kind in args.kinds:
                sweep.append(measure(kind, 50, threads))
    finally:
        if process:
            process.terminate()
            process.wait(30)
        drop_database(database_url)
        rabbitmqctl("delete_vhost", vhost)
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.json, {"benchmark": "mdm_endpoint", "load_generator": args.load,
                           "workers": args.workers, "threads": args.threads, "hosts": args.hosts,
                           "load_average_start": started_load, "results": results,
                           "threads_sweep": sweep})


if __name__ == "__main__":
    main()
