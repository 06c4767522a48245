"""Benchmark: one SCEP profile delivered to N enrolled hosts — rendering, one-time codes,
Commander.Enqueue over gRPC (batched SQL on the MDM side) and push requests on RabbitMQ — and how
the time grows with N. Real PostgreSQL, RabbitMQ (a throw-away vhost) and gRPC: the reconcile pass
runs in this process, the Commander is the real `mdm-endpoint grpc` process, as in production.

The CA's issuance pacing (max_issuance_per_second) is lifted for the benchmark: pacing spreads
sends over time on purpose, and what is measured here is how fast the processor can send.

`.venv/bin/python bench/delivery_bench.py --hosts 1000 10000 100000 [--repeat 3] [--json out.json]`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from benchlib import (
    CpuMeter,
    Profile,
    add_common_arguments,
    free_port,
    load_average,
    rabbitmqctl,
    write_json,
)

from mdmscep_common.bus import Publisher
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from mdmscep_common.service_pki import write_service_pki
from mdmscep_common.service_tls import ServiceTls
from profile_processor.commander_client import CommanderClient
from profile_processor.delivery import SEND_BATCH, Reconciler, challenge_context
from profile_processor.store import DeliveryStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = (ROOT / "tests/testdata/seed_scep_profile.mobileconfig").read_bytes()
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
KEY = "bench-server-private-key-0123456789abcdef"


def seed(db: Database, hosts: int, database_url: str) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.processor_read_models import copy_owned_rows_to_processor

    box = SecretBox(KEY)
    with db.transaction() as conn:
        conn.execute("TRUNCATE hosts, commands, host_profiles, scep_codes, profiles, ca_pacing, "
                     "profile_certificate_authorities, certificate_authorities CASCADE")
        with conn.cursor().copy("COPY hosts (uuid, serial_number, enrolled, push_token, push_magic, "
                                "topic, identity_cert_sha256) FROM STDIN") as copy:
            for i in range(hosts):
                udid = str(uuid.UUID(int=i + 1)).upper()
                copy.write_row((udid, f"C02B{i:08d}", True, os.urandom(32), str(uuid.uuid4()),
                                "com.apple.mgmt.External.bench", hashlib.sha256(udid.encode()).digest()))
        ca_id = conn.execute(
            "INSERT INTO certificate_authorities (name, url, challenge_encrypted, "
            "max_issuance_per_second) VALUES ('Test_SCEP', 'http://ca.bench/scep', %s, 1e9) "
            "RETURNING id",
            (box.encrypt("bench-challenge", challenge_context("Test_SCEP")),)).fetchone()["id"]
        conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum, "
                     "has_scep_payload) VALUES ('bench-profile', 'SCEP proxy cert', "
                     "'Fleet.custom.SCEP', 'u', %s, %s, true)", (SEED, hashlib.sha256(SEED).digest()))
        conn.execute("INSERT INTO profile_certificate_authorities VALUES ('bench-profile', %s)", (ca_id,))
        # The processor works from its read models, as its migration seeds them from these rows.
        copy_owned_rows_to_processor(conn)
    with db.transaction() as conn:
        conn.execute("ANALYZE hosts")
        conn.execute("ANALYZE enrolled_hosts")
    # The seed's own writes reach disk now, not during the measured pass.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _tls_env(pki: Path, service: str) -> dict[str, str]:
    return {"GRPC_TLS_CA_CERT": str(pki / "ca.crt"),
            "GRPC_TLS_CERT": str(pki / service / "tls.crt"),
            "GRPC_TLS_KEY": str(pki / service / "tls.key")}


def _wait_for_grpc(address: str, tls: ServiceTls, process: subprocess.Popen,
                   timeout: float = 30) -> None:
    import grpc

    channel = tls.channel(address, "mdm-endpoint")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise SystemExit(f"mdm-endpoint grpc did not start (exit {process.poll()})") from None
    finally:
        channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=3,
                        help="passes per size (each on a fresh seed); the median is reported, so "
                             "one pass disturbed by the machine's other load does not set the "
                             "growth figure")
    add_common_arguments(parser)
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    database_url = f"{PG_BASE}/mdmscep_bench_{run_id}"
    vhost = f"mdmscep_bench_{run_id}"
    ensure_database(database_url)
    apply_migrations(database_url)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp_url = f"{AMQP_BASE}/{vhost}"
    db = Database(database_url, max_size=8).open()
    port = free_port()
    # Internal gRPC is mutual TLS: the Commander as mdm-endpoint, this process as the processor.
    pki = Path(tempfile.mkdtemp(prefix="mdmscep-bench-pki-"))
    write_service_pki(pki)
    processor = _tls_env(pki, "profile-processor")
    tls = ServiceTls.from_files("profile-processor", *processor.values())
    env = {**os.environ, "DATABASE_URL": database_url, "AMQP_URL": amqp_url,
           "SERVER_PRIVATE_KEY": KEY, "MDM_GRPC_PORT": str(port), "MDM_GRPC_METRICS_PORT": "0",
           **_tls_env(pki, "mdm-endpoint")}
    commander = subprocess.Popen([str(BIN / "mdm-endpoint"), "grpc"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    results = []
    started_load = load_average()
    try:
        _wait_for_grpc(f"127.0.0.1:{port}", tls, commander)
        client = CommanderClient(f"127.0.0.1:{port}", tls)
        reconciler = Reconciler(db, DeliveryStore(), client, SecretBox(KEY), "https://proxy.bench",
                                code_ttl=3600, verify_interval=3600)
        # The exchange exists before the clock starts (a fresh vhost has none).
        Publisher(amqp_url).close()
        print(f"# delivery: one SCEP profile to N enrolled hosts ({platform.machine()}, "
              f"{os.cpu_count()} cores; batches of {SEND_BATCH}; rendering, codes, "
              "Commander.Enqueue (mdm-endpoint grpc process), push requests; load "
              f"{started_load[0]})")
        print(f"{'hosts':>8} {'seconds':>8} {'host-profiles/s':>16} {'commands':>9} {'ms/host':>8}")
        baseline = None
        for n in args.hosts:
            passes = []
            for _ in range(max(1, args.repeat)):
                seed(db, n, database_url)
                load = load_average()
                meter = CpuMeter({"processor": [os.getpid()], "commander": [commander.pid]},
                                 database_url)
                with Profile(args.profile_dir if not passes else None, f"delivery-{n}",
                             [os.getpid(), commander.pid]):
                    meter.start()
                    started = time.perf_counter()
                    counts = reconciler.run_pass()
                    elapsed = time.perf_counter() - started
                    cpu = meter.stop()
                with db.transaction() as conn:
                    commands = conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"]
                    codes = conn.execute("SELECT count(*) AS n FROM scep_codes").fetchone()["n"]
                if commands != n or codes != n or counts.get("sent") != n:
                    raise SystemExit(f"{n} hosts: {commands} commands and {codes} codes queued, "
                                     f"pass counts {counts}")
                passes.append((elapsed, load, cpu, meter.written.get("postgresql", 0)))
            elapsed, load, cpu, written = sorted(passes, key=lambda p: p[0])[len(passes) // 2]
            baseline = baseline or (elapsed / n)
            results.append({"hosts": n, "seconds": round(elapsed, 3),
                            "host_profiles_per_second": round(n / elapsed, 1),
                            "ms_per_host": round(1000 * elapsed / n, 4), "commands": n,
                            "passes_seconds": [round(p[0], 3) for p in passes],
                            "load_average": load, "cpu_seconds": cpu,
                            "postgresql_written_mb": round(written / 2**20, 1)})
            print(f"{n:>8} {elapsed:>8.2f} {n / elapsed:>16.0f} {n:>9} "
                  f"{1000 * elapsed / n:>8.3f}  (median of {len(passes)}: "
                  f"{', '.join(f'{p[0]:.2f}' for p in passes)} s; x{(elapsed / n) / baseline:.2f} "
                  f"per host vs first; CPU s: {', '.join(f'{k} {v:.2f}' for k, v in cpu.items())}; "
                  f"PostgreSQL wrote {written / 2**20:.0f} MB; load {load[0]})", flush=True)
    finally:
        if client:
            client.close()
        commander.terminate()
        try:
            commander.wait(30)
        except subprocess.TimeoutExpired:
            commander.kill()
        db.close()
        drop_database(database_url)
        rabbitmqctl("delete_vhost", vhost)
        shutil.rmtree(pki, ignore_errors=True)
    write_json(args.json, {"benchmark": "delivery", "send_batch": SEND_BATCH,
                           "load_average_start": started_load, "results": results})


if __name__ == "__main__":
    main()
