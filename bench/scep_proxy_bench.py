"""Benchmark of the SCEP proxy (not a test: it prints figures).

    .venv/bin/python bench/scep_proxy_bench.py [--seconds 3] [--workers 2] [--threads 8] [--json F]

It starts a real scepserver, a fake ProfileAuthority (gRPC, in this process, every code valid) and
the proxy as production runs it (gunicorn, gthread workers × threads, in its own process) twice:
with the fleet-wide per-CA protection of production (FleetCaLimiter: a PostgreSQL advisory lock
per request in flight, the CA's max_concurrent_requests, an outcome row per request) and
without it (the in-process limit only, no database). It prints:
- certificates per second for 1 and 4 concurrent clients, straight to the scepserver and through
  both proxies, and their ratios (goal ≥ 0.95). A client is the real `scepclient` (GetCACert,
  GetCACaps, PKIOperation) in a fresh directory per certificate, with a pre-generated RSA key so
  key generation is not what is measured; the per-CA limit is at least the client count. Direct
  and proxied alternate in short slices so that other load on the machine hits all alike;
- proxied GetCACaps and GetCACert requests per second (4 keep-alive clients) and the latency the
  proxy adds at p50/p99 (one sequential client alternating direct and proxied requests, proxied
  minus direct). These are the steady state: the authorization and the CA's answer come from the
  proxy's caches.
Each figure is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchlib import CpuMeter, Profile, add_common_arguments, child_pids, load_average, write_json

from mdmscep_common.proxy_urls import ProxyId, proxy_url

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
CHALLENGE = "bench-challenge"
CA = "Bench_CA"
HOST, PROFILE, CODE = "BENCH-HOST-0001", "bench-profile", "bench-code"
CLIENT_COUNTS = (1, 4)
ROUNDS = 4  # direct and proxied alternate in this many slices per figure


def _serve_proxy(port: int) -> None:
    """Child process: the proxy app under gunicorn, without broker (the benchmark measures
    forwarding). With BENCH_FLEET_LIMITER=1 it records as production does (outcome rows and
    scep.result in the outbox, refusals shared) and the per-CA limit is production's
    FleetCaLimiter on DATABASE_URL; otherwise outcomes go nowhere, the in-process limit, no
    database."""
    from mdmscep_common.health import HealthChecks
    from mdmscep_common.http import serve_http
    from scep_proxy.app import build_proxy, create_app
    from scep_proxy.limits import FleetCaLimiter
    from scep_proxy.main import gunicorn_options
    from scep_proxy.settings import ScepProxySettings

    class NoOutcomes:
        def record(self, outcome, latency_ms):
            pass

    settings = ScepProxySettings.from_env()

    def factory():
        if not os.environ.get("BENCH_FLEET_LIMITER"):
            return create_app(build_proxy(settings, NoOutcomes()).proxy, HealthChecks({}))
        # Production's recorders (app.create_production_app) without its config.changed listener.
        from mdmscep_common.db import Database
        from mdmscep_common.outbox import SCEP_PROXY_OUTBOX, Outbox
        from scep_proxy.client_limits import SharedClientRefusalLimiter
        from scep_proxy.outcome_metrics import CountingRecorder
        from scep_proxy.outcome_records import OutcomeStore

        db = Database(settings.database_url, max_size=4, name="scep-proxy").open()
        outcomes = CountingRecorder(OutcomeStore(db, Outbox(SCEP_PROXY_OUTBOX)))
        limiter = FleetCaLimiter(settings.database_url, settings.scep_proxy_ca_concurrency,
                                 settings.scep_proxy_queue_timeout, settings.http_threads)
        return create_app(build_proxy(settings, outcomes, limiter=limiter,
                                      client_limiter=SharedClientRefusalLimiter(db)).proxy,
                          HealthChecks({}))

    serve_http(factory, port, settings.http_workers, settings.http_threads, "bench-proxy", [],
               gunicorn_options=gunicorn_options(settings))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.keys: list[Path] = []
        self._serial = 0
        self._lock = threading.Lock()

    # --- set-up --------------------------------------------------------------------------
    def start(self) -> None:
        from mdmscep_common.db import ensure_database
        from mdmscep_common.migrate import apply_migrations
        from tests.support.fake_profile_authority import FakeAuthorityServer
        from tests.support.ports import free_port, wait_for_port
        from tests.support.scepserver import start_scepserver
        from tests.support.service_certs import tls_env

        self.ca = start_scepserver(challenge=CHALLENGE, workdir=self.workdir / "ca")
        self.authority = FakeAuthorityServer(max_workers=32)
        limit = max(CLIENT_COUNTS) * 2
        # The CA's max_concurrent_requests comes with each authorization, as from the processor.
        self.authority.fake.add_ca(CA, self.ca.url, max_concurrent_requests=limit)
        self.authority.fake.add_delivery(HOST, PROFILE, CA, any_code=True)
        self.database_url = f"{PG_BASE}/mdmscep_bench_{uuid.uuid4().hex[:8]}"
        ensure_database(self.database_url)
        apply_migrations(self.database_url)
        self.proxies: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {"direct": self.ca.url}
        self.bases: dict[str, str] = {}
        self._logs = []
        for name, fleet in (("proxied", False), ("protected", True)):
            port = free_port()
            # ROOT first; a PYTHONPATH given (a clone's services/*) still comes before the venv's.
            path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": path,
                   "SERVER_PRIVATE_KEY": "bench-server-private-key-0123456789abcdef",
                   "PROCESSOR_GRPC_ADDR": self.authority.address, **tls_env("scep-proxy"),
                   "DATABASE_URL": self.database_url,
                   "HTTP_WORKERS": str(self.args.workers), "HTTP_THREADS": str(self.args.threads),
                   "SCEP_PROXY_CA_CONCURRENCY": str(limit),
                   "SCEP_PROXY_CACHE_TTL": "60", "SCEP_UPSTREAM_TIMEOUT": "30"}
            if fleet:
                env["BENCH_FLEET_LIMITER"] = "1"
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            log = (self.workdir / f"{name}.log").open("wb")
            self._logs.append(log)
            self.proxies[name] = subprocess.Popen(
                [sys.executable, __file__, "--serve-proxy", str(port)], env=env,
                stdout=log, stderr=subprocess.STDOUT)
            wait_for_port(port, timeout=20)
            self.bases[name] = f"http://127.0.0.1:{port}"
            self.urls[name] = proxy_url(self.bases[name], ProxyId(HOST, PROFILE, CA, CODE))
        self.proxy_url = self.urls["proxied"]
        self.keys = [self._new_key(i) for i in range(max(CLIENT_COUNTS))]

    def _new_key(self, index: int) -> Path:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = self.workdir / f"key-{index}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
        return path

    def stop(self) -> None:
        for stop in (self._stop_proxies, getattr(self, "authority", None) and self.authority.stop,
                     getattr(self, "ca", None) and self.ca.stop, self._drop_database):
            if not stop:
                continue
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - clean up as much as possible
                print(f"cleanup: {exc}", file=sys.stderr)

    def _stop_proxies(self) -> None:
        for proxy in getattr(self, "proxies", {}).values():
            proxy.terminate()
            try:
                proxy.wait(30)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        for log in getattr(self, "_logs", []):
            log.close()

    def _drop_database(self) -> None:
        from mdmscep_common.db import drop_database

        if getattr(self, "database_url", None):
            drop_database(self.database_url)

    # --- certificates per second ---------------------------------------------------------
    def _one_certificate(self, url: str, key: Path) -> bool:
        with self._lock:
            self._serial += 1
            serial = self._serial
        attempt = Path(tempfile.mkdtemp(prefix=f"c{serial}-", dir=self.workdir))
        try:
            shutil.copy(key, attempt / "key.pem")
            result = subprocess.run(
                ["scepclient", "-server-url", url, "-challenge", CHALLENGE, "-cn", f"bench-{serial}",
                 "-private-key", str(attempt / "key.pem"),
                 "-certificate", str(attempt / "cert.pem")],
                capture_output=True, timeout=60, cwd=attempt)
            return result.returncode == 0 and (attempt / "cert.pem").exists()
        finally:
            shutil.rmtree(attempt, ignore_errors=True)

    def _certificates_for(self, url: str, clients: int, seconds: float) -> tuple[int, int, float]:
        done, failed = [0], [0]
        deadline = time.monotonic() + seconds

        def client(key: Path) -> None:
            while time.monotonic() < deadline:
                ok = self._one_certificate(url, key)
                with self._lock:
                    (done if ok else failed)[0] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(self.keys[i],)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return done[0], failed[0], time.monotonic() - started

    def certificates_per_second(self, urls: dict[str, str], clients: int
                                ) -> dict[str, tuple[float, int]]:
        """Certificates per second and failed runs against each url, measured in alternating
        slices so that load drift on the machine hits every url alike; `self.attempts` holds
        the runs per url (certificates and failures)."""
        totals = {name: [0, 0, 0.0] for name in urls}
        names = list(urls)
        for round_ in range(ROUNDS):
            for name in names if round_ % 2 == 0 else reversed(names):
                done, failed, elapsed = self._certificates_for(urls[name], clients,
                                                               self.args.seconds / ROUNDS)
                total = totals[name]
                total[0], total[1], total[2] = total[0] + done, total[1] + failed, total[2] + elapsed
        self.attempts = {name: done + failed for name, (done, failed, _) in totals.items()}
        return {name: (done / elapsed, failed) for name, (done, failed, elapsed) in totals.items()}

    # --- GetCACaps / GetCACert ------------------------------------------------------------
    def requests_per_second(self, url: str, operation: str, clients: int = 4) -> tuple[float, int]:
        import httpx

        count, errors = [0], [0]
        deadline = time.monotonic() + self.args.seconds

        def client() -> None:
            with httpx.Client(timeout=10) as http:
                while time.monotonic() < deadline:
                    ok = http.get(url, params={"operation": operation}).status_code == 200
                    with self._lock:
                        (count if ok else errors)[0] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return count[0] / (time.monotonic() - started), errors[0]

    def latencies(self, urls: list[str], operation: str) -> list[list[float]]:
        """Sequential request latencies per url, the urls taking turns request by request."""
        import httpx

        samples: list[list[float]] = [[] for _ in urls]
        deadline = time.monotonic() + self.args.seconds / 2
        with httpx.Client(timeout=10) as http:
            for url in urls:
                http.get(url, params={"operation": operation})  # connections and caches warm
            while time.monotonic() < deadline or len(samples[0]) < 100:
                for url, times in zip(urls, samples, strict=True):
                    started = time.perf_counter()
                    http.get(url, params={"operation": operation})
                    times.append(time.perf_counter() - started)
        return samples


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="scep-proxy-bench-"))
    bench = Bench(args, workdir)
    started_load = load_average()
    figures: dict = {"benchmark": "scep_proxy", "workers": args.workers, "threads": args.threads,
                     "seconds": args.seconds, "load_average_start": started_load,
                     "certificates": [], "ca_information": []}
    try:
        bench.start()
        print(f"proxy: gunicorn {args.workers} worker(s) × {args.threads} threads; "
              f"{os.cpu_count()} CPUs; {args.seconds:g} s per figure; load {started_load[0]}")
        for url in bench.urls.values():  # warm-up: processes, pools, caches
            if not bench._one_certificate(url, bench.keys[0]):
                raise SystemExit(f"warm-up: scepclient got no certificate from {url}")

        print("\ncertificates per second (scepclient, fresh directory each); proxied: in-process "
              "limit only; protected: fleet-wide per-CA limit (production)")
        print(f"{'clients':>8} {'direct':>8} {'proxied':>8} {'ratio':>6} {'protected':>10} "
              f"{'ratio':>6} {'added ms/cert':>14}")
        any_failed = False
        for clients in CLIENT_COUNTS:
            load = load_average()
            meter = CpuMeter({name: [p.pid, *child_pids(p.pid)]
                              for name, p in bench.proxies.items()}, bench.database_url).start()
            with Profile(args.profile_dir if clients == 1 else None, "scep-proxy-pki",
                         [bench.proxies["protected"].pid], subprocesses=True, idle=True):
                rates = bench.certificates_per_second(bench.urls, clients)
            cpu = meter.stop()
            direct, direct_failed = rates["direct"]
            row = {"clients": clients, "direct": round(direct, 1), "load_average": load,
                   "cpu_seconds": cpu, "attempts": bench.attempts,
                   "failed": {name: f for name, (_, f) in rates.items()}}
            for name in ("proxied", "protected"):
                rate = rates[name][0]
                row[name] = round(rate, 1)
                row[f"{name}_ratio"] = round(rate / direct, 3) if direct else None
                # Time each client spends per certificate, proxied minus direct.
                row[f"{name}_added_ms"] = round(clients * 1000 * (1 / rate - 1 / direct), 1) \
                    if rate and direct else None
            figures["certificates"].append(row)
            failed = {name: f for name, (_, f) in rates.items() if f}
            any_failed = any_failed or bool(failed)
            note = f"  (failed: {failed})" if failed else ""
            print(f"{clients:>8} {direct:>8.1f} {row['proxied']:>8.1f} {row['proxied_ratio']:>6.2f} "
                  f"{row['protected']:>10.1f} {row['protected_ratio']:>6.2f} "
                  f"{row['proxied_added_ms']:>6.1f} / {row['protected_added_ms']:<6.1f}{note}")

        if any_failed:
            print("(failed: scepclient runs that got no certificate; scepserver's file depot "
                  "races on its serial number under concurrent issuance, direct or not)")
        print("\nproxied GetCACaps / GetCACert (cached answers; latency: 1 sequential client)")
        print(f"{'operation':>10} {'req/s':>8} {'p50 direct':>11} {'p50 proxy':>10} "
              f"{'added p50':>10} {'added p99':>10}")
        for operation in ("GetCACaps", "GetCACert"):
            with Profile(args.profile_dir, f"scep-proxy-{operation}",
                         [bench.proxies["protected"].pid], subprocesses=True, gil=True):
                rate, errors = bench.requests_per_second(bench.urls["protected"], operation)
            direct, proxied = bench.latencies([bench.ca.url, bench.urls["protected"]], operation)
            ms = 1000
            added50 = (_percentile(proxied, 0.5) - _percentile(direct, 0.5)) * ms
            added99 = (_percentile(proxied, 0.99) - _percentile(direct, 0.99)) * ms
            figures["ca_information"].append({
                "operation": operation, "rps": round(rate, 1), "errors": errors,
                "p50_direct_ms": round(statistics.median(direct) * ms, 3),
                "p50_proxied_ms": round(statistics.median(proxied) * ms, 3),
                "added_p50_ms": round(added50, 3), "added_p99_ms": round(added99, 3),
                "load_average": load_average()})
            note = f"  ({errors} non-200)" if errors else ""
            print(f"{operation:>10} {rate:>8.0f} {statistics.median(direct) * ms:>9.2f}ms "
                  f"{statistics.median(proxied) * ms:>8.2f}ms {added50:>8.2f}ms "
                  f"{added99:>8.2f}ms{note}")
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.json, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each figure")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--serve-proxy", type=int, metavar="PORT", help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.serve_proxy:
        _serve_proxy(args.serve_proxy)
    else:
        run(args)


if __name__ == "__main__":
    main()
