"""Benchmark: signed Idle check-ins per second through the real mdm-endpoint (gunicorn), with
p50/p99 latency, at several concurrencies. Bodies are signed before the clock starts.

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    database_url = f"{PG_BASE}/mdmscep_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    apply_migrations(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-"))
    process = None
    try:
        ca_cert, ca_key = _identity_ca()
        (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        hosts, requests = [], []
        for _ in range(args.hosts):
            udid = str(uuid.uuid4()).upper()
            cert, key = _device(ca_cert, ca_key, udid)
            fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
            hosts.append((udid, fingerprint))
            requests.append(_signed(cert, key, {"Status": "Idle", "UDID": udid}))
        db = Database(database_url).open()
        with db.transaction() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO hosts (uuid, identity_cert_sha256, enrolled) "
                            "VALUES (%s, %s, true)", hosts)
        db.close()
        port = _free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "MDM_HTTP_PORT": str(port),
               "SERVER_PRIVATE_KEY": "bench-" + "k" * 40, "MDM_IDENTITY_CA_CERTS": str(workdir / "ca.pem"),
               "HTTP_WORKERS": str(args.workers), "HTTP_THREADS": "16"}
        process = subprocess.Popen([str(BIN / "mdm-endpoint"), "http"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/mdm/connect"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("mdm-endpoint did not start")
            time.sleep(0.2)
        run_level(url, requests, 4, 1.0)  # warm-up
        print(f"# mdm-endpoint: signed Idle check-ins ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, gunicorn {args.workers} workers x 16 threads, "
              f"{args.hosts} hosts, load generator on the same machine)")
        print(f"{'concurrency':>11} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for level in args.concurrency:
            r = run_level(url, requests, level, args.seconds)
            print(f"{r['concurrency']:>11} {r['requests']:>9} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f} {r['errors']:>6}", flush=True)
    finally:
        if process:
            process.terminate()
            process.wait(30)
        drop_database(database_url)


if __name__ == "__main__":
    main()
