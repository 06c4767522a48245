"""Benchmark: one SCEP profile delivered to N enrolled hosts — rendering, one-time codes,
Commander.Enqueue over gRPC (batched SQL on the MDM side) and push requests on RabbitMQ — and how
the time grows with N. Real PostgreSQL, RabbitMQ (a throw-away vhost) and gRPC, in one process.

`.venv/bin/python bench/delivery_bench.py --hosts 1000 10000`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

from mdm_endpoint.commander import Commander, CommanderServicer
from mdm_endpoint.store import CommandStore
from mdmscep.v1 import commander_pb2_grpc
from mdmscep_common.bus import Publisher
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.grpc_server import GrpcServer
from mdmscep_common.health import HealthChecks
from mdmscep_common.migrate import apply_migrations
from profile_processor.commander_client import CommanderClient
from profile_processor.delivery import SEND_BATCH, Reconciler, challenge_context
from profile_processor.store import DeliveryStore

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "tests/integration/testdata/seed_scep_profile.mobileconfig").read_bytes()
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
KEY = "bench-server-private-key-0123456789abcdef"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def seed(db: Database, hosts: int) -> None:
    box = SecretBox(KEY)
    with db.transaction() as conn:
        conn.execute("TRUNCATE hosts, commands, host_profiles, scep_codes, profiles, "
                     "profile_certificate_authorities, certificate_authorities CASCADE")
        with conn.cursor().copy("COPY hosts (uuid, serial_number, enrolled, push_token, push_magic, "
                                "topic, identity_cert_sha256) FROM STDIN") as copy:
            for i in range(hosts):
                udid = str(uuid.UUID(int=i + 1)).upper()
                copy.write_row((udid, f"C02B{i:08d}", True, os.urandom(32), str(uuid.uuid4()),
                                "com.apple.mgmt.External.bench", hashlib.sha256(udid.encode()).digest()))
        ca_id = conn.execute(
            "INSERT INTO certificate_authorities (name, url, challenge_encrypted) VALUES "
            "('Test_SCEP', 'http://ca.bench/scep', %s) RETURNING id",
            (box.encrypt("bench-challenge", challenge_context("Test_SCEP")),)).fetchone()["id"]
        conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum, "
                     "has_scep_payload) VALUES ('bench-profile', 'SCEP proxy cert', "
                     "'Fleet.custom.SCEP', 'u', %s, %s, true)", (SEED, hashlib.sha256(SEED).digest()))
        conn.execute("INSERT INTO profile_certificate_authorities VALUES ('bench-profile', %s)", (ca_id,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    database_url = f"{PG_BASE}/mdmscep_bench_{run_id}"
    vhost = f"mdmscep_bench_{run_id}"
    ensure_database(database_url)
    apply_migrations(database_url)
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    db = Database(database_url, max_size=8).open()
    publisher = Publisher(f"{AMQP_BASE}/{vhost}")
    server = GrpcServer(0, ["mdmscep.v1.Commander"], HealthChecks({}), host="127.0.0.1")
    server.add(commander_pb2_grpc.add_CommanderServicer_to_server,
               CommanderServicer(Commander(db, CommandStore(), publisher)))
    server.start()
    client = CommanderClient(f"127.0.0.1:{server.port}")
    reconciler = Reconciler(db, DeliveryStore(), client, SecretBox(KEY), "https://proxy.bench",
                            code_ttl=3600, verify_interval=3600)
    print(f"# delivery: one SCEP profile to N enrolled hosts ({platform.machine()}, "
          f"{os.cpu_count()} cores; batches of {SEND_BATCH}; rendering, codes, Commander.Enqueue, "
          "push requests)")
    print(f"{'hosts':>8} {'seconds':>8} {'host-profiles/s':>16} {'commands':>9} {'ms/host':>8}")
    try:
        baseline = None
        for n in args.hosts:
            seed(db, n)
            started = time.perf_counter()
            reconciler.run_pass()
            elapsed = time.perf_counter() - started
            with db.transaction() as conn:
                commands = conn.execute("SELECT count(*) AS n FROM commands").fetchone()["n"]
            baseline = baseline or (elapsed / n)
            print(f"{n:>8} {elapsed:>8.2f} {n / elapsed:>16.0f} {commands:>9} "
                  f"{1000 * elapsed / n:>8.3f}  (x{(elapsed / n) / baseline:.2f} per host vs first)",
                  flush=True)
    finally:
        client.close()
        server.stop(grace=0)
        publisher.close()
        db.close()
        drop_database(database_url)
        _rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()
