"""Free loopback ports for test servers.

Ports come from below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range starts
at 32768), so the outgoing connections of the many clients a test runs never take a port between
free_port() and the server's bind. Under pytest-xdist each worker takes only the ports congruent
to its index modulo the worker count: two workers of one run never hand out the same port. A
random starting point per process keeps concurrent runs on the machine apart; whatever is already
bound (or lingers in TIME_WAIT) is skipped."""

from __future__ import annotations

import os
import random
import socket
import threading

LOW, HIGH = 10000, 32000  # below the ephemeral range, above the fixed ports the stack defaults to

_lock = threading.Lock()


def _worker_slot() -> tuple[int, int]:
    """(this worker's index, number of workers); (0, 1) outside pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        return int(worker[2:]) % count, count
    return 0, 1


_INDEX, _STEP = _worker_slot()
_SLOTS = (HIGH - LOW) // _STEP
_cursor = random.randrange(_SLOTS)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    global _cursor
    with _lock:
        for _ in range(_SLOTS):
            port = LOW + (_cursor % _SLOTS) * _STEP + _INDEX
            _cursor += 1
            if _bindable(port):
                return port
    raise RuntimeError(f"no free loopback port in {LOW}-{HIGH} for this worker")


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
