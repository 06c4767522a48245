"""Benchmark: push fan-out, pushes per second from mdm-endpoint's push sender (PushSender and
ApnsClient, tokens loaded with HostStore.push_targets) to the local HTTP/2 TLS fake APNs
(tests/hostsim), which requires the push certificate as client certificate like APNs.

The fake APNs runs in its own process (as APNs is elsewhere); the sender runs here, as the push
worker runs it: one push_hosts() call per batch of hosts. Every push must be answered 200.

`.venv/bin/python bench/push_bench.py --hosts 20000 [--batch 5000] [--json out.json]`
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import CpuMeter, Profile, add_common_arguments, load_average, write_json

from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")


def _serve_apns(directory: str) -> None:
    """Child process: the fake APNs; prints its port, answers until stdin closes."""
    from hostsim.fake_apns import FakeApns

    pki = Path(directory)
    apns = FakeApns(str(pki / "apns-server.pem"), str(pki / "apns-server.key"),
                    str(pki / "push-ca.pem"), on_push=None).start()
    apns.pushes = _Counter()
    print(apns.port, flush=True)
    sys.stdin.read()
    print(len(apns.pushes), flush=True)
    apns.stop()


class _Counter(list):
    """The fake keeps every push; a counter is all the benchmark needs (and memory stays flat)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def append(self, _item) -> None:
        self.count += 1

    def __len__(self) -> int:
        return self.count


def seed(db: Database, hosts: int, topic: str) -> list[str]:
    udids = [str(uuid.UUID(int=i + 1)).upper() for i in range(hosts)]
    with db.transaction() as conn:
        conn.execute("TRUNCATE hosts CASCADE")
        with conn.cursor().copy("COPY hosts (uuid, enrolled, push_token, push_magic, topic, "
                                "identity_cert_sha256) FROM STDIN") as copy:
            for udid in udids:
                copy.write_row((udid, True, hashlib.sha256(udid.encode()).digest(),
                                str(uuid.uuid4()).upper(), topic,
                                hashlib.sha256(b"id" + udid.encode()).digest()))
    return udids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=5000,
                        help="hosts per push_hosts() call (the push worker's batch)")
    parser.add_argument("--rounds", type=int, default=2, help="measured passes over the hosts")
    parser.add_argument("--serve-apns", metavar="DIR", help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.serve_apns:
        _serve_apns(args.serve_apns)
        return

    from hostsim.pki import make_apns_pki
    from mdm_endpoint.push import ApnsClient, PushSender
    from mdm_endpoint.store import HostStore

    workdir = Path(tempfile.mkdtemp(prefix="push-bench-"))
    pki = make_apns_pki(workdir)
    database_url = f"{PG_BASE}/mdmscep_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    apply_migrations(database_url)
    fake = subprocess.Popen([sys.executable, __file__, "--serve-apns", str(workdir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    db = Database(database_url, max_size=4).open()
    apns = None
    results, answered = [], None
    started_load = load_average()
    try:
        port = int(fake.stdout.readline())
        apns = ApnsClient(f"https://127.0.0.1:{port}", str(pki.push_cert), str(pki.push_key),
                          str(pki.server_ca))
        sender = PushSender(db, HostStore(), apns)
        udids = seed(db, args.hosts, pki.topic)
        warm = sender.push_hosts(udids[:2000])  # TLS handshakes, pools, HPACK tables
        if sum(o.delivered for o in warm) != len(warm) or not warm:
            raise SystemExit("warm-up: pushes were not delivered")
        print(f"# push fan-out to the fake APNs (HTTP/2, TLS client certificate; {platform.machine()}, "
              f"{os.cpu_count()} cores; batches of {args.batch} hosts; load {started_load[0]})")
        print(f"{'hosts':>8} {'seconds':>8} {'pushes/s':>9} {'delivered':>10}  CPU s")
        for round_ in range(args.rounds):
            load = load_average()
            meter = CpuMeter({"sender": [os.getpid()], "fake_apns": [fake.pid]}, database_url)
            with Profile(args.profile_dir if round_ == 0 else None, "push", [os.getpid()],
                         gil=True):
                meter.start()
                started = time.perf_counter()
                delivered = 0
                for start in range(0, len(udids), args.batch):
                    outcomes = sender.push_hosts(udids[start:start + args.batch])
                    delivered += sum(o.delivered for o in outcomes)
                elapsed = time.perf_counter() - started
                cpu = meter.stop()
            if delivered != len(udids):
                raise SystemExit(f"only {delivered} of {len(udids)} pushes were delivered")
            results.append({"hosts": len(udids), "batch": args.batch, "seconds": round(elapsed, 3),
                            "pushes_per_second": round(delivered / elapsed, 1),
                            "delivered": delivered, "load_average": load, "cpu_seconds": cpu})
            print(f"{len(udids):>8} {elapsed:>8.2f} {delivered / elapsed:>9.0f} {delivered:>10}  "
                  f"{', '.join(f'{k} {v:.1f}' for k, v in cpu.items())} (load {load[0]})",
                  flush=True)
    finally:
        if apns:
            apns.close()
        try:
            out, _ = fake.communicate(timeout=10)
            answered = int(out.strip().splitlines()[-1]) if out.strip() else None
        except (subprocess.TimeoutExpired, ValueError):
            fake.kill()
            fake.wait()
        db.close()
        drop_database(database_url)
    write_json(args.json, {"benchmark": "push", "hosts": args.hosts, "batch": args.batch,
                           "fake_apns_pushes": answered, "load_average_start": started_load,
                           "results": results})


if __name__ == "__main__":
    main()
