"""The fault tests' world: the stack (launcher + supervisord) on a private PostgreSQL and RabbitMQ,
a real custom CA behind a TCP relay that can go down, an identity CA, the fake APNs and a fleet of
simulated Macs enrolled once; and the measurements each scenario reports."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "tests" / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
API = "/api/v1/fleet"
CA_NAME = "Test_SCEP"
CUSTOM_CHALLENGE = "fault&<custom>-challenge-7Qx"
IDENTITY_CHALLENGE = "fault-identity-challenge-3Kz"
ENROLL_SECRET = "fault-enroll-secret-9Vw"

LONG = os.environ.get("MDMSCEP_TEST_LONG", "") not in ("", "0")
HOSTS = int(os.environ.get("MDMSCEP_FAULT_HOSTS") or (200 if LONG else 40))


def scenario_profile(tag: str) -> tuple[bytes, str]:
    """The seed's sample profile with identifiers of its own and `<serial> <TAG>` as subject CN,
    so the CA's depot tells this delivery's certificates apart. Returns (bytes, identifier)."""
    identifier = f"Fleet.fault.{tag}"
    raw = (SEED.replace(b"Fleet.custom.SCEP", identifier.encode())
               .replace(b"com.fleetdm.custom.scep", f"com.fleetdm.fault.{tag}.scep".encode())
               .replace(b"4CD1BD65-1D2C-4E9E-9E18-9BCD400CDEDC", str(uuid.uuid4()).upper().encode())
               .replace(b"9DCC35A5-72F9-42B7-9A98-7AD9A9CCA3AC", str(uuid.uuid4()).upper().encode())
               .replace(b"%SerialNumber% WIFI", f"%SerialNumber% {tag}".encode()))
    return raw, identifier


# --- the CA's depot ------------------------------------------------------------------------

@dataclass(frozen=True)
class IssuedCert:
    valid: bool  # V in index.txt (scepserver revokes the older one on re-issue: R)
    serial: int
    common_name: str


def issued_certificates(depot: Path) -> list[IssuedCert]:
    """Every certificate micromdm's scepserver issued, from its OpenSSL-style index.txt."""
    out = []
    index = depot / "index.txt"
    if not index.exists():
        return out
    for line in index.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 6:
            continue
        match = re.search(r"/CN=([^/]*)", parts[5])
        out.append(IssuedCert(parts[0] == "V", int(parts[3], 16),
                              match.group(1) if match else ""))
    return out


# --- processes -----------------------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def kill_tree(pid: int) -> list[int]:
    """SIGKILL the process and every descendant (a crash of the whole service: gunicorn master
    and workers alike). The parent goes first so it cannot fork replacements."""
    pids = process_tree(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


# --- status of a delivery ------------------------------------------------------------------

def delivery_statuses(dsn: str, profile_uuid: str) -> dict[str, int] | None:
    """status → hosts for one profile, straight from the processor's table; None while the
    database does not answer (a restart)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            rows = conn.execute("SELECT status, count(*) FROM host_profiles WHERE profile_uuid = %s "
                                "GROUP BY status", (profile_uuid,)).fetchall()
    except psycopg.Error:
        return None
    return {status: count for status, count in rows}


def attempts_used(dsn: str, profile_uuid: str) -> dict[int, int]:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        rows = conn.execute("SELECT attempts, count(*) FROM host_profiles WHERE profile_uuid = %s "
                            "GROUP BY attempts ORDER BY attempts", (profile_uuid,)).fetchall()
    return {attempts: count for attempts, count in rows}


def explain_host(dsn: str, host, identifier: str, issued: int) -> str:
    """What one simulated host saw of a delivery: each InstallProfile of the profile, how many
    times it was handed out, and the host's answer (with the error text), in order."""
    import plistlib

    uuids = []
    for command in host.received:
        if command["Command"].get("RequestType") != "InstallProfile":
            continue
        if identifier.encode() in command["Command"].get("Payload", b""):
            uuids.append(command["CommandUUID"])
    texts = {}
    if uuids:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            for command_uuid, status, result in conn.execute(
                    "SELECT command_uuid, status, result FROM commands WHERE command_uuid = ANY(%s)",
                    (sorted(set(uuids)),)).fetchall():
                error = ""
                if result:
                    try:
                        chain = plistlib.loads(bytes(result)).get("ErrorChain") or []
                        error = "; ".join(str(e.get("USEnglishDescription", "")) for e in chain)
                    except Exception:  # noqa: BLE001 - an explanation, best effort
                        error = "?"
                error = error.replace("The SCEP server returned an invalid response. ", "")
                texts[command_uuid] = f"{status}{': ' + error[:110] if error else ''}"
    parts, seen = [], {}
    for command_uuid in uuids:
        seen[command_uuid] = seen.get(command_uuid, 0) + 1
    for n, command_uuid in enumerate(dict.fromkeys(uuids), 1):
        times = seen[command_uuid]
        parts.append(f"InstallProfile #{n} (handed out {times}×) → {texts.get(command_uuid, '?')}")
    return f"{host.serial_number} (CA issued {issued}): " + " | ".join(parts)


class Admin:
    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url + API, timeout=60,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        self.errors: list[str] = []

    def host_profile(self, host_uuid: str, profile_uuid: str, patience: float = 20.0) -> dict:
        """The host's delivery of the profile. Right after a database restart admin-config may
        answer 5xx for a moment; each such answer is kept in `errors` and the call retried."""
        deadline = time.monotonic() + patience
        while True:
            response = self.http.get(f"/hosts/{host_uuid}/configuration_profiles")
            if response.status_code == 200:
                rows = response.json()["profiles"]
                return next((r for r in rows if r["profile_uuid"] == profile_uuid), {})
            self.errors.append(f"{response.status_code} {response.text[:200]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"admin API kept failing: {self.errors[-3:]}")
            time.sleep(0.5)

    def statuses(self, host_uuids: list[str], profile_uuid: str) -> dict[str, dict]:
        with ThreadPoolExecutor(8) as pool:
            rows = pool.map(lambda h: self.host_profile(h, profile_uuid), host_uuids)
        return dict(zip(host_uuids, rows, strict=True))

    def close(self) -> None:
        self.http.close()


# --- what a scenario reports ---------------------------------------------------------------

@dataclass
class ScenarioResult:
    name: str
    fault: str
    hosts: int
    verified: int = 0
    delivery_seconds: float = 0.0  # upload → every host verified
    recovery_seconds: float | None = None  # end of the fault → every host verified
    fault_seconds: float = 0.0  # how long the fault lasted (outage, restart)
    service_back_seconds: float | None = None  # killed → supervisord shows it running again
    issued: int = 0  # certificates the CA issued for this delivery
    extra: int = 0  # issued beyond one per host
    hosts_with_extra: int = 0
    duplicates: int = 0  # hosts with two valid certificates at the CA, or two on the host
    attempts: dict[int, int] = field(default_factory=dict)
    host_retries: int = 0  # polls the simulated hosts retried after a 5xx or a cut connection
    unhandled_errors: int = 0  # "unhandled error" lines in the stack's log during the scenario
    dead_letters: dict[str, int] = field(default_factory=dict)
    verified_at_fault: int = 0
    explanations: list[str] = field(default_factory=list)  # hosts with extra certs or attempts

    def line(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}"
        back = "" if self.service_back_seconds is None else f", back in {self.service_back_seconds:.1f} s"
        attempts = " ".join(f"{a}:{n}" for a, n in sorted(self.attempts.items()))
        return (f"{self.name:<24} verified {self.verified}/{self.hosts}, "
                f"delivery {self.delivery_seconds:.1f} s, recovery {recovery} s "
                f"(fault {self.fault_seconds:.1f} s{back}; {self.verified_at_fault} verified at the "
                f"fault), certificates issued {self.issued} (extra {self.extra} on "
                f"{self.hosts_with_extra} hosts), duplicates {self.duplicates}, attempts "
                f"[{attempts}], host retries {self.host_retries}, unhandled errors "
                f"{self.unhandled_errors}, dead letters {sum(self.dead_letters.values())}")


def table(results: list[ScenarioResult]) -> str:
    header = ("| scenario | fault | verified | delivery (s) | recovery (s) | issued | extra | "
              "duplicates | attempts used | host retries | dead letters |")
    rule = "|" + "---|" * 11
    rows = []
    for r in results:
        recovery = "-" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f}"
        attempts = ", ".join(f"{n}×{a}" for a, n in sorted(r.attempts.items()))
        rows.append(f"| {r.name} | {r.fault} | {r.verified}/{r.hosts} | {r.delivery_seconds:.1f} | "
                    f"{recovery} | {r.issued} | {r.extra} | {r.duplicates} | {attempts} | "
                    f"{r.host_retries} | {sum(r.dead_letters.values())} |")
    return "\n".join([header, rule, *rows])


def stack_env(database_url: str, amqp_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "AMQP_URL": amqp_url,
            "SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY, "ADMIN_API_TOKEN": ADMIN_TOKEN}


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    value = eventually(predicate, timeout, interval)
    if not value:
        raise TimeoutError(f"{what} not reached within {timeout:g} s")
    return value
