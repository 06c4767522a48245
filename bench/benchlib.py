"""Shared bits of the benchmarks: `--json` output, the machine's load, and py-spy profiles.

Every benchmark script takes `--json PATH` (its figures, for bench/report.py) and
`--profile-dir DIR` (py-spy samples of the process under test while it is measured, as
collapsed stacks `<name>.txt`, summarized by the report).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROFILE_RATE = 50  # samples per second: little overhead on a 2-core machine


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def add_common_arguments(parser) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--profile-dir", metavar="DIR",
                        help="record py-spy profiles of the measured processes into DIR")


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    data = {**data, "load_average_end": load_average()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def rabbitmqctl(*args: str) -> None:
    """A rabbitmqctl command (a benchmark's own vhost: add_vhost, set_permissions, delete_vhost)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, system_only: bool = False) -> float:
    """User + system (or system only) CPU time of a process, all its threads, so far; 0 if it
    is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[12]) + (0 if system_only else int(fields[11]))) / _TICKS


def written_bytes(pid: int) -> int:
    """Bytes a process has caused to be written to storage so far (/proc/PID/io)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def postgres_backends(database_url: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to the benchmark's database."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (name,)).fetchall()
    return [r[0] for r in rows]


class CpuMeter:
    """CPU seconds spent by named groups of processes between start() and stop(); PostgreSQL
    backends of a database are found again at stop, so connections opened meanwhile count."""

    def __init__(self, groups: dict[str, list[int]], database_url: str | None = None):
        self._groups = groups
        self._database_url = database_url
        self._before: dict[int, float] = {}
        self._before_system: dict[int, float] = {}
        self.seconds: dict[str, float] = {}
        self.system: dict[str, float] = {}
        self.written: dict[str, int] = {}  # bytes written to storage, per group

    def _pids(self) -> dict[str, list[int]]:
        groups = dict(self._groups)
        if self._database_url:
            groups["postgresql"] = postgres_backends(self._database_url)
        return groups

    def start(self) -> CpuMeter:
        pids = [pid for group in self._pids().values() for pid in group]
        self._before = {pid: cpu_seconds(pid) for pid in pids}
        self._before_system = {pid: cpu_seconds(pid, system_only=True) for pid in pids}
        self._before_written = {pid: written_bytes(pid) for pid in pids}
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds per group; `system` holds the kernel's part of them."""
        groups = self._pids()
        self.seconds = {name: round(sum(cpu_seconds(pid) - self._before.get(pid, 0.0)
                                        for pid in pids), 2) for name, pids in groups.items()}
        self.system = {name: round(sum(cpu_seconds(pid, True) - self._before_system.get(pid, 0.0)
                                       for pid in pids), 2) for name, pids in groups.items()}
        self.written = {name: sum(written_bytes(pid) - self._before_written.get(pid, 0)
                                  for pid in pids) for name, pids in groups.items()}
        return self.seconds


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's workers), from /proc."""
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profile:
    """py-spy recording of some processes (with their children) while a phase is measured.

    `with Profile(dir, "name", [pid]):` writes DIR/name.txt (collapsed stacks, one file per pid
    as name.txt, name-1.txt, …). Sampling is non-blocking, so the processes are not paused. Does
    nothing without a directory or without py-spy. `gil`: only samples of threads holding the
    GIL (where Python spends CPU); `idle`: waiting threads too (where the wall time goes)."""

    def __init__(self, directory: str | None, name: str, pids: list[int], subprocesses: bool = False,
                 rate: int = PROFILE_RATE, idle: bool = False, gil: bool = False):
        self._idle = idle
        self._gil = gil
        self._spies: list[tuple[subprocess.Popen, Path]] = []
        self._directory = Path(directory) if directory else None
        self._name = name
        self._pids = pids
        self._subprocesses = subprocesses
        self._rate = rate

    def __enter__(self) -> Profile:
        tool = py_spy()
        if self._directory is None or tool is None:
            return self
        self._directory.mkdir(parents=True, exist_ok=True)
        for i, pid in enumerate(self._pids):
            out = self._directory / (f"{self._name}.txt" if i == 0 else f"{self._name}-{i}.txt")
            args = [tool, "record", "--nonblocking", "--format", "raw", "--rate", str(self._rate),
                    "--pid", str(pid), "--output", str(out)]
            if self._subprocesses:
                args.append("--subprocesses")
            if self._idle:
                args.append("--idle")
            if self._gil:
                args.append("--gil")
            self._spies.append((subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL), out))
        time.sleep(0.5)  # py-spy attaches
        return self

    def __exit__(self, *exc) -> None:
        for spy, _ in self._spies:
            spy.send_signal(signal.SIGINT)
        for spy, _ in self._spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


OUR_PACKAGES = ("mdm_endpoint/", "profile_processor/", "scep_proxy/", "mdmscep_common/")


def summarize_profile(path: Path, top: int = 12, focus: str | None = None) -> dict[str, Any]:
    """Collapsed stacks → the functions with the most samples, self (leaf) and inclusive (any
    frame of the stack), as fractions of all samples; `ours`: inclusive, this project's code
    only. `focus`: only stacks through a frame containing that text (e.g. a request handler,
    when idle threads were sampled too)."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames or (focus and not any(focus in f for f in frames)):
            continue
        total += n
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        items = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(n / total, 3)) for name, n in items]

    ours = {name: n for name, n in inclusive.items() if any(p in name for p in OUR_PACKAGES)}
    return {"samples": total, "self": ranked(self_counts) if total else [],
            "inclusive": ranked(inclusive) if total else [],
            "ours": ranked(ours) if total else []}


def _short_frame(frame: str) -> str:
    """'func (path/to/module.py:12)' → 'func (module.py)'; thread/process roots are dropped."""
    frame = frame.strip()
    if frame.startswith(("process ", "thread ")):
        return ""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{name} ({short})" if file else name
