"""Benchmark: the whole-fleet path (issue 20, item 3). Every simulated host checks in, answers
DeviceInformation, receives one SCEP profile, gets its certificate through the SCEP proxy from a
real CA, and answers ProfileList and CertificateList until its delivery is `verified`; then one
hourly verification round. It reports the CPU each service spends per host (processor,
mdm-endpoint, scep-proxy, admin-config, PostgreSQL), the rate at which the fleet reaches
`verified` beside the CA's own rate, and extrapolates both to 100k hosts.

    .venv/bin/python bench/fleet_bench.py [--hosts 1000] [--ca-rate 50] [--json out.json]

What is real: the stack as `make run` starts it (tests/support/stack.py: every service its own
process, gunicorn for HTTP), a fresh PostgreSQL database and RabbitMQ vhost, micromdm's
scepserver (`-allowrenew 0`) behind tests/support/throttled_ca.py (one certificate at a time,
each at least 1/ca-rate s: a CA of known capacity), the fake APNs waking the hosts
(tests/hostsim), and each host's certificate requested by the real `scepclient` through the
proxy. What is not: the hosts' identity certificates are issued in this process (one shared
RSA-2048 key, a certificate per host) instead of by an identity scepserver; the enrollment
profile download and the identity SCEP request are not part of the measured path. The hosts,
the fake APNs and the CA relay run in this process and share the 2 cores with the stack: their
CPU is measured and shown apart. The hourly round is triggered as an hour passing would: the
deliveries' verified_at and verify_requested_at are moved one hour back
(PROFILE_VERIFY_INTERVAL keeps its production default of 3600 s).
"""

from __future__ import annotations

import argparse
import os
import platform
import plistlib
import resource
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from benchlib import (
    CpuMeter,
    Profile,
    add_common_arguments,
    child_pids,
    cpu_seconds,
    load_average,
    rabbitmqctl,
    write_json,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fleet_figures import PRODUCTION_INTERVAL, TARGET_HOSTS, analyse, what_bounds

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hostsim.device import SimulatedHost  # noqa: E402
from hostsim.fleet import Fleet, start_fake_apns  # noqa: E402
from hostsim.pki import make_apns_pki  # noqa: E402
from mdmscep_common.db import drop_database  # noqa: E402
from mdmscep_common.service_database import SCHEMAS  # noqa: E402
from tests.support.identity_pki import IdentityCa  # noqa: E402
from tests.support.scepserver import direct_rate, start_scepserver  # noqa: E402
from tests.support.stack import start_stack  # noqa: E402
from tests.support.throttled_ca import ThrottledCa  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

PG_BASE = os.environ.get("BENCH_PG_BASE", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
SEED = (ROOT / "tests/testdata/seed_scep_profile.mobileconfig").read_bytes()
CA_NAME = "Test_SCEP"  # the seed profile's CA placeholder names it
CHALLENGE = "fleet-bench-challenge"
ENROLL_SECRET = "fleet-bench-enroll-secret"  # noqa: S105 - a throw-away stack
ADMIN_TOKEN = "fleet-bench-admin-token-0123456789abcdef"  # noqa: S105 - a throw-away stack
API = "/api/v1/fleet"
IDLE_SECONDS = 15.0
# The stack's processes by service (deploy/local/launcher.py's programs); gunicorn masters'
# workers are added from /proc.
SERVICES = {
    "processor": ("profile-processor",),
    "mdm_endpoint": ("mdm-endpoint-http", "mdm-endpoint-grpc", "mdm-endpoint-push"),
    "scep_proxy": ("scep-proxy-http", "scep-proxy-grpc"),
    "admin_config": ("admin-config", "admin-config-worker"),
}
GUNICORN = ("mdm-endpoint-http", "scep-proxy-http", "admin-config")


# pg_stat_activity's wait of a backend in pg_advisory_lock: a proxy request waiting for a CA slot.
SLOT_WAIT = "Lock:advisory"


class Backends:
    """The CPU of the bench database's backends by the service whose role connected (each
    service connects as its own role), sampled every SAMPLE_SECONDS by a thread on its own
    connection: a backend that closes meanwhile keeps what it spent up to its last sample
    (reading /proc only at the start and the end loses backends that came and went). This
    script's own connections are left out."""

    SAMPLE_SECONDS = 0.2

    def __init__(self, database_url: str, leave_out: set[int]):
        self._conn = psycopg.connect(database_url, autocommit=True)
        self._leave_out = leave_out | {self._conn.info.backend_pid}
        self._seen: dict[int, list] = {}  # pid → [service, CPU at first sight, CPU last seen]
        # (service, query) → samples in which a backend was running it: where PostgreSQL's
        # time goes, without pg_stat_statements.
        self.active: dict[tuple[str, str], int] = {}
        self.slot_waits: dict[str, int] = {}  # service → samples of a backend waiting for a CA slot
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        rows = self._conn.execute("SELECT pid, usename, state, query, wait_event_type || ':' "
                                  "|| wait_event FROM pg_stat_activity "
                                  "WHERE datname = current_database()").fetchall()
        with self._lock:
            for pid, role, state, query, waiting in rows:
                if pid in self._leave_out:
                    continue
                if state == "active" and not first and waiting == SLOT_WAIT:
                    # A host's request queued for one of the CA's slots (scep_proxy/limits.py):
                    # the CA's queue, kept in PostgreSQL's lock manager, not work or contention.
                    service = _service_of_role(role or "")
                    self.slot_waits[service] = self.slot_waits.get(service, 0) + 1
                elif state == "active" and not first:
                    key = (_service_of_role(role or ""),
                           " ".join((query or "").split())[:80] + (f" [{waiting}]" if waiting
                                                                   else ""))
                    self.active[key] = self.active.get(key, 0) + 1
                cpu = cpu_seconds(pid)
                if pid not in self._seen:
                    # Opened during the phase: all its CPU counts.
                    self._seen[pid] = [_service_of_role(role or ""), cpu if first else 0.0, cpu]
                elif cpu > 0:
                    self._seen[pid][2] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self._sample()

    def so_far(self) -> dict[str, float]:
        with self._lock:
            out: dict[str, float] = {}
            for service, first, last in self._seen.values():
                out[service] = out.get(service, 0.0) + last - first
        return out

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._conn.close()
        return {k: round(v, 2) for k, v in self.so_far().items()}


class Meter:
    """CPU seconds per service of the stack, the CA, PostgreSQL (the bench database's backends,
    by service: Backends) and the host side (this process and the scepclient runs it waited
    for), plus wall time, over one phase."""

    def __init__(self, groups: dict[str, list[int]], database_url: str, poll_backend: int):
        self._meter = CpuMeter(groups)
        self._database_url = database_url
        self._poll_backend = poll_backend

    def __enter__(self) -> Meter:
        self._backends = Backends(self._database_url, {self._poll_backend})
        self._hosts = _host_side_cpu()
        self._machine = _machine_busy()
        self.started = time.monotonic()
        self.load = load_average()
        self._meter.start()
        return self

    def postgresql_so_far(self) -> dict[str, float]:
        """PostgreSQL CPU seconds by service since the start."""
        return self._backends.so_far()

    def __exit__(self, *exc) -> None:
        cpu = dict(self._meter.stop())
        self.postgresql_by_service = self._backends.stop()
        samples = sorted(self._backends.active.items(), key=lambda kv: -kv[1])
        total = sum(n for _, n in samples) or 1
        # Of the samples of busy backends and of requests queued for a CA's slot together.
        queued = sum(self._backends.slot_waits.values())
        self.postgresql_slot_waits = round(queued / (total + queued), 3) if queued else 0.0
        self.postgresql_active = [{"service": k[0], "query": k[1], "share": round(n / total, 3)}
                                  for k, n in samples[:8]]
        # Of all samples: each service's queries seen waiting for a lock (wait_event_type Lock).
        self.postgresql_lock_waits = {}
        for (service, query), n in samples:
            if query.endswith("]") and "[Lock:" in query:
                self.postgresql_lock_waits[service] = round(
                    self.postgresql_lock_waits.get(service, 0) + n / total, 3)
        cpu["postgresql"] = round(sum(self.postgresql_by_service.values()), 2)
        cpu["hosts"] = round(_host_side_cpu() - self._hosts, 2)
        self.machine_busy = round(_machine_busy() - self._machine, 2)
        self.seconds = time.monotonic() - self.started
        self.cpu = cpu


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _service_of_role(role: str) -> str:
    """The service a role of service_database belongs to (`<database>_<schema>`), by this
    bench's names for them."""
    for schema in SCHEMAS.values():
        if role.endswith(schema):
            return schema.replace("profile_processor", "processor")
    return "other"


def _host_side_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _groups(stack, scepserver_pid: int) -> dict[str, list[int]]:
    """PIDs per program of the stack (a gunicorn master with its workers), and the CA's."""
    groups: dict[str, list[int]] = {}
    for programs in SERVICES.values():
        for program in programs:
            pid = stack.pid(program)
            groups[program] = [pid] + (child_pids(pid) if program in GUNICORN else [])
    groups["ca"] = [scepserver_pid]
    return groups


def _by_service(cpu: dict[str, float]) -> dict[str, float]:
    """Per-program CPU seconds → per service (the CA, PostgreSQL and the hosts as they are)."""
    out = {service: round(sum(cpu.get(p, 0.0) for p in programs), 2)
           for service, programs in SERVICES.items()}
    for key in ("postgresql", "ca", "hosts"):
        out[key] = cpu.get(key, 0.0)
    return out


def _counts(conn) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM host_profiles GROUP BY status").fetchall()
    return {status: n for status, n in rows}


def _phase_row(name: str, hosts: int, meter: Meter, **extra) -> dict:
    return {"phase": name, "hosts": hosts, "seconds": round(meter.seconds, 2),
            "cpu_seconds": _by_service(meter.cpu), "program_cpu_seconds": meter.cpu,
            "load_average": meter.load,
            # Every process of the machine: the rest is other jobs sharing it.
            "machine_busy_cpu_seconds": meter.machine_busy,
            "postgresql_cpu_seconds_by_service": meter.postgresql_by_service,
            "postgresql_active_queries": meter.postgresql_active,
            "postgresql_lock_waits": meter.postgresql_lock_waits,
            "postgresql_slot_waits": meter.postgresql_slot_waits, **extra}


def _sizes(conn) -> dict[str, tuple[int, int]]:
    """Table → (rows, bytes with indexes and TOAST), after VACUUM ANALYZE (exact row counts)."""
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    rows = conn.execute(
        """SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        """).fetchall()
    return {name: (max(0, int(n)), int(size)) for name, n, size in rows}


def _growth(before: dict, after: dict, hosts: int, top: int = 10) -> list[dict]:
    """What the fleet added to each table (the empty tables' pages left out), scaled linearly
    to 100k hosts."""
    out = []
    for name, (rows, size) in after.items():
        rows0, size0 = before.get(name, (0, 0))
        added, grown = rows - rows0, size - size0
        if grown <= 0 and added <= 0:
            continue
        out.append({"table": name, "rows": added, "rows_per_host": round(added / hosts, 2),
                    "mb": round(grown / 2**20, 2),
                    "mb_per_100k_hosts": round(grown / 2**20 * TARGET_HOSTS / hosts, 1)})
    return sorted(out, key=lambda t: -t["mb"])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--ca-rate", type=float, default=50.0,
                        help="the CA's capacity, certificates per second (the relay's service "
                             "time is its inverse; the CA's max_issuance_per_second too)")
    parser.add_argument("--host-workers", type=int, default=16,
                        help="hosts answering at once (threads of the simulated fleet)")
    parser.add_argument("--reconcile-interval", type=float, default=2.0,
                        help="PROFILE_RECONCILE_INTERVAL of the processor (production: 30 s)")
    parser.add_argument("--timeout", type=float, default=600)
    add_common_arguments(parser)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    run_id = uuid.uuid4().hex[:8]
    database_url = f"{PG_BASE}/mdmscep_bench_fleet_{run_id}"
    vhost = f"mdmscep_bench_fleet_{run_id}"
    root = Path(tempfile.mkdtemp(prefix="mdmscep-fleet-bench-"))
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    started_load = load_average()
    scepserver = start_scepserver(challenge=CHALLENGE, organization="fleet bench CA",
                                  workdir=root / "ca")
    ca = ThrottledCa(scepserver.url.removesuffix("/scep"), 1.0 / args.ca_rate)
    identity_ca = IdentityCa("fleet bench identity CA")
    identity_ca_pem = root / "identity-ca.pem"
    identity_ca_pem.write_bytes(identity_ca.pem)
    # One key for every host's identity (and its SCEP payload): a key per host would be most of
    # this machine's time.
    host_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = make_apns_pki(root / "apns")
    fleet = Fleet("http://unused", 0, root / "hosts", workers=args.host_workers)
    apns = start_fake_apns(pki, fleet)
    base = {"DATABASE_URL": database_url, "AMQP_URL": f"{AMQP_BASE}/{vhost}",
            "SERVER_PRIVATE_KEY": "fleet-bench-server-private-key-0123456789abcdef",
            "ADMIN_API_TOKEN": ADMIN_TOKEN}
    stack = start_stack(base, root / "stack", ENROLL_SECRET=ENROLL_SECRET,
                        IDENTITY_SCEP_URL=scepserver.url, IDENTITY_SCEP_CHALLENGE=CHALLENGE,
                        MDM_IDENTITY_CA_CERTS=str(identity_ca_pem), APNS_URL=apns.url,
                        APNS_CERT=str(pki.push_cert), APNS_KEY=str(pki.push_key),
                        APNS_CA_CERTS=str(pki.server_ca),
                        PROFILE_RECONCILE_INTERVAL=str(args.reconcile_interval),
                        PROFILE_RETRY_BACKOFF="0.5", HTTP_WORKERS="2",
                        SCEP_PROXY_QUEUE_TIMEOUT="30")
    phases: dict[str, dict] = {}
    figures: dict = {}
    own_rate = None
    poll = None
    try:
        stack.wait_healthy(timeout=120)
        admin = httpx.Client(base_url=stack.admin_url + API, timeout=60,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        poll = psycopg.connect(database_url, autocommit=True)
        poll_backend = poll.execute("SELECT pg_backend_pid()").fetchone()[0]
        groups = _groups(stack, scepserver.process.pid)
        empty = _sizes(poll)
        mdm_url = stack.url("MDM_HTTP_PORT")
        enroll = plistlib.loads(httpx.get(f"{mdm_url}/mdm/enroll",
                                          params={"secret": ENROLL_SECRET}, timeout=30).content)
        topic = next(p["Topic"] for p in enroll["PayloadContent"]
                     if p["PayloadType"] == "com.apple.mdm")
        key_pem = host_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        hosts = []
        for i in range(args.hosts):
            host = SimulatedHost(mdm_url, serial_number=f"C02FLT{i:06d}", workdir=root / "hosts",
                                 client=fleet.client)
            identity = identity_ca.issue(host.udid, key=host_key)
            host.identity_cert, host.identity_key = identity.certificate, identity.key
            host.scep_key_pem = key_pem  # the SCEP payload's key, made beforehand
            host.topic = topic
            fleet.add_host(host)
            hosts.append(host)
        own_rate = round(direct_rate(ca.url, CHALLENGE, key_pem, clients=8, seconds=4), 1)
        print(f"# whole fleet: {args.hosts} simulated hosts, one SCEP profile, CA at "
              f"{args.ca_rate:g} certificates/s ({platform.machine()}, {cores} cores, load "
              f"{started_load[0]})", flush=True)
        print(f"the CA straight from 8 scepclients (no product): {own_rate} certificates/s",
              flush=True)

        # Check-in: Authenticate, TokenUpdate, then DeviceInformation when pushed.
        def check_in(host: SimulatedHost) -> None:
            host.checkin({"MessageType": "Authenticate", "Topic": topic,
                          "SerialNumber": host.serial_number, "DeviceName": host.device_name,
                          "Model": host.model, "OSVersion": host.os_version})
            host.checkin({"MessageType": "TokenUpdate", "Topic": topic,
                          "Token": host.push_token, "PushMagic": host.push_magic})

        def facts_answered() -> bool:
            return fleet.idle() and all(any(h[0] == "DeviceInformation" for h in host.handled)
                                        for host in hosts)

        with Meter(groups, database_url, poll_backend) as meter:
            with ThreadPoolExecutor(args.host_workers) as pool:
                list(pool.map(check_in, hosts))
            wait_for(facts_answered, args.timeout, "check-in (DeviceInformation answered)",
                     interval=0.5)
        phases["checkin"] = _phase_row("checkin", args.hosts, meter)
        print(f"check-in (Authenticate, TokenUpdate, DeviceInformation): {meter.seconds:.1f} s, "
              f"{args.hosts / meter.seconds:.0f} hosts/s", flush=True)

        created = admin.post("/certificate_authorities", json={"custom_scep_proxy": {
            "name": CA_NAME, "url": ca.url, "challenge": CHALLENGE,
            "max_concurrent_requests": 10, "max_issuance_per_second": args.ca_rate}})
        if created.status_code != 200:
            raise SystemExit(f"creating the CA: {created.status_code} {created.text}")

        # Reaching verified: upload, deliver, InstallProfile, SCEP via the proxy, ProfileList
        # and CertificateList.
        trace: list[tuple[float, int]] = []
        issued: list[int] = []  # certificates the CA had issued at each poll
        issued_before = len(ca.issued)
        with Profile(args.profile_dir, "fleet-processor", [stack.pid("profile-processor")],
                     gil=True), \
             Profile(args.profile_dir, "fleet-mdm-endpoint", [stack.pid("mdm-endpoint-http")],
                     subprocesses=True, gil=True), \
             Meter(groups, database_url, poll_backend) as meter:
            upload = admin.post("/configuration_profiles", files={
                "profile": ("fleet.mobileconfig", SEED)})
            if upload.status_code != 200:
                raise SystemExit(f"uploading the profile: {upload.status_code} {upload.text}")

            def all_verified() -> bool:
                counts = _counts(poll)
                trace.append((time.monotonic() - meter.started, counts.get("verified", 0)))
                issued.append(len(ca.issued) - issued_before)
                failed = counts.get("failed", 0)
                if failed:
                    raise SystemExit(f"{failed} deliveries failed: {counts}")
                return counts.get("verified", 0) >= args.hosts
            wait_for(all_verified, args.timeout, "reaching verified", interval=0.5)
        certificates = ca.issued[issued_before:]
        ca_seconds = certificates[-1] - certificates[0] if len(certificates) > 1 else None
        steady = _steady_rate(trace, args.hosts)
        phases["verified"] = _phase_row(
            "verified", args.hosts, meter, hosts_per_second=round(args.hosts / meter.seconds, 2),
            steady_hosts_per_second=steady,
            certificates_issued=len(certificates),
            ca_issued_per_second=round((len(certificates) - 1) / ca_seconds, 2)
            if ca_seconds else None,
            trace=[(round(t, 1), v) for t, v in trace[::max(1, len(trace) // 60)]],
            **_lag(trace, issued, args.hosts))
        print(f"to verified: {meter.seconds:.1f} s, {args.hosts / meter.seconds:.1f} hosts/s "
              f"overall, {steady} hosts/s between 10 % and 90 % verified; the CA issued "
              f"{len(certificates)} certificates at {phases['verified']['ca_issued_per_second']}/s "
              f"(its capacity {args.ca_rate:g}/s)", flush=True)
        after_verified = _sizes(poll)
        tables = _growth(empty, after_verified, args.hosts)

        # Idle: every delivery verified, none due; what remains is the standing cost of the
        # processor's reconcile passes (each scans the fleet's scope) and the services' upkeep.
        with Meter(groups, database_url, poll_backend) as meter:
            time.sleep(IDLE_SECONDS)
        phases["idle"] = _phase_row("idle", args.hosts, meter)
        print(f"idle ({IDLE_SECONDS:g} s, passes every {args.reconcile_interval:g} s): CPU s "
              + ", ".join(f"{k} {v:.2f}" for k, v in meter.cpu.items()), flush=True)

        # One hourly verification round: an hour passes for every verified delivery.
        commands_before = poll.execute("SELECT request_type, count(*) FROM commands "
                                       "GROUP BY request_type").fetchall()
        with Meter(groups, database_url, poll_backend) as meter:
            marker = poll.execute("SELECT now()").fetchone()[0]
            poll.execute("UPDATE host_profiles SET verified_at = verified_at - interval '1 hour', "
                         "verify_requested_at = verify_requested_at - interval '1 hour' "
                         "WHERE status = 'verified'")

            def round_done() -> bool:
                n = poll.execute("SELECT count(*) FROM host_profiles WHERE status = 'verified' "
                                 "AND verified_at >= %s", (marker,)).fetchone()[0]
                return n >= args.hosts
            wait_for(round_done, args.timeout, "the hourly verification round", interval=0.5)
        commands_after = poll.execute("SELECT request_type, count(*) FROM commands "
                                      "GROUP BY request_type").fetchall()
        before = dict(commands_before)
        round_commands = {t: n - before.get(t, 0) for t, n in commands_after
                          if n - before.get(t, 0)}
        phases["hourly"] = _phase_row("hourly", args.hosts, meter, commands=round_commands)
        hourly_tables = _growth(after_verified, _sizes(poll), args.hosts)
        print(f"hourly verification round: {meter.seconds:.1f} s, commands "
              f"{round_commands}", flush=True)
        if fleet.errors:
            print(f"host errors: {len(fleet.errors)} (first: {fleet.errors[0]})")
        figures = {"benchmark": "fleet", "hosts": args.hosts, "ca_rate": args.ca_rate,
                   "ca_own_rate": own_rate, "cores": cores, "host_workers": args.host_workers,
                   "reconcile_interval": args.reconcile_interval,
                   "load_average_start": started_load, "phases": phases, "tables": tables,
                   "hourly_tables": hourly_tables, "host_errors": len(fleet.errors),
                   "shared_buffers_mb": poll.execute(
                       "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings "
                       "WHERE name = 'shared_buffers'").fetchone()[0]}
        figures.update(analyse(phases, args.ca_rate, cores, args.reconcile_interval))
        _print(figures)
    finally:
        if poll is not None:
            poll.close()
        stack.stop()
        apns.stop()
        fleet.close()
        ca.close()
        scepserver.stop()
        drop_database(database_url)
        rabbitmqctl("delete_vhost", vhost)
        shutil.rmtree(root, ignore_errors=True)
    write_json(args.json, figures)


def _lag(trace: list[tuple[float, int]], issued: list[int], hosts: int) -> dict:
    """When the CA had issued every certificate: the hosts verified then and the seconds the
    rest took (the path after the CA)."""
    at = next((i for i, n in enumerate(issued) if n >= hosts), None)
    if at is None:
        return {}
    return {"ca_done_seconds": round(trace[at][0], 1), "verified_when_ca_done": trace[at][1],
            "seconds_after_ca_done": round(trace[-1][0] - trace[at][0], 1)}


def _steady_rate(trace: list[tuple[float, int]], hosts: int) -> float | None:
    """Hosts verified per second between 10 % and 90 % of the fleet verified (the start's
    delivery and the last stragglers left out)."""
    low = next((t for t, v in trace if v >= 0.1 * hosts), None)
    high_at = next(((t, v) for t, v in trace if v >= 0.9 * hosts), None)
    low_v = next((v for t, v in trace if v >= 0.1 * hosts), None)
    if low is None or high_at is None or high_at[0] <= low:
        return None
    return round((high_at[1] - low_v) / (high_at[0] - low), 2)


def _print(figures: dict) -> None:
    names = ("processor", "mdm_endpoint", "scep_proxy", "admin_config", "postgresql", "ca",
             "hosts")
    print(f"\n{'CPU ms per host':<34}" + "".join(f"{n:>13}" for n in names))
    for label, key in (("check-in", "cpu_ms_per_host_checkin"),
                       ("to verified", "cpu_ms_per_host_to_verified"),
                       ("hourly round (per host per hour)", "cpu_ms_per_host_per_hour")):
        print(f"{label:<34}" + "".join(f"{figures[key].get(n, 0):>13.2f}" for n in names))
    loads = ", ".join(f"{k} {p['load_average'][0]}" for k, p in figures["phases"].items())
    print(f"(1-minute load average at each phase's start: {loads})")
    print("CPU ms per host per program, check-in and to verified: " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(figures["program_cpu_ms_per_host"].items(),
                                         key=lambda kv: -kv[1])))
    print("PostgreSQL CPU ms per host by the service whose queries ran (check-in and to "
          "verified): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                    figures["postgresql_cpu_ms_per_host_by_service"].items()))
    reach = figures["phases"]["verified"]
    if reach.get("ca_done_seconds") is not None:
        print(f"the CA had issued every certificate {reach['ca_done_seconds']} s in, with "
              f"{reach['verified_when_ca_done']} hosts verified; the rest took "
              f"{reach['seconds_after_ca_done']} s more")
    print("PostgreSQL, to verified: where its backends were seen running (share of samples):")
    for q in reach["postgresql_active_queries"][:6]:
        print(f"  {100 * q['share']:4.0f} %  {q['service']:<13} {q['query']}")
    print(f"standing cost of the reconcile passes (idle), 100k hosts: "
          f"{figures['standing_cores_100k_product']:.2f} cores at passes every "
          f"{figures['reconcile_interval']:g} s ("
          + ", ".join(f"{k} {v:.2f}" for k, v in figures["standing_cores_100k"].items())
          + f"), {figures['standing_cores_100k_production']:.2f} at every "
          f"{PRODUCTION_INTERVAL:g} s (scaled by the passes' count); to verified net of it: "
          + ", ".join(f"{k} {v:.1f}" for k, v in figures["cpu_ms_per_host_net"].items())
          + " ms per host")
    print(f"100k hosts (linear): {figures['hours_to_verify_100k_at_ca_rate']} h to verified at "
          f"the CA's rate, {figures['hours_to_verify_100k_at_measured_rate']} h at the rate "
          f"measured here; {figures['product_core_hours_100k']} product core-hours for their "
          "first verification")
    print("\ntables: what the fleet added, scaled to 100k hosts (linear):")
    for label, tables in (("to verified", figures["tables"]),
                          ("one hourly round", figures["hourly_tables"])):
        for t in tables[:6]:
            print(f"  {label:<17} {t['table']:<26} {t['rows_per_host']:>6.2f} rows/host "
                  f"{t['mb']:>8.2f} MB → {t['mb_per_100k_hosts']:>8.1f} MB per {TARGET_HOSTS:,}")
    print("\n" + textwrap.fill(what_bounds(figures), 100))


if __name__ == "__main__":
    main()
