"""A fleet of simulated hosts woken by the fake APNs, as a real fleet is woken by Apple's."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .device import SimulatedHost
from .fake_apns import FakeApns, Push

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, mdm_url: str, count: int, workdir: Path, workers: int = 8,
                 serial_prefix: str = "C02SIM"):
        self.client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=workers * 2))
        self.hosts = [SimulatedHost(mdm_url, serial_number=f"{serial_prefix}{i:05d}",
                                    workdir=workdir, client=self.client) for i in range(count)]
        self._by_token = {h.push_token.hex(): h for h in self.hosts}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="host")
        self._lock = threading.Lock()
        self._scheduled: set[str] = set()
        self._again: set[str] = set()
        self.errors: list[str] = []

    def add_host(self, host: SimulatedHost) -> None:
        self.hosts.append(host)
        self._by_token[host.push_token.hex()] = host

    def enroll(self, enroll_secret: str, hosts: list[SimulatedHost] | None = None) -> None:
        list(self._pool.map(lambda h: h.enroll(enroll_secret), hosts or self.hosts))

    def on_push(self, push: Push) -> None:
        host = self._by_token.get(push.token)
        if host is not None:
            self.wake(host)

    def wake(self, host: SimulatedHost) -> None:
        """Poll the host soon; a wake during its poll makes it poll once more afterwards."""
        with self._lock:
            if host.udid in self._scheduled:
                self._again.add(host.udid)
                return
            self._scheduled.add(host.udid)
        self._pool.submit(self._poll, host)

    def _poll(self, host: SimulatedHost) -> None:
        while True:
            try:
                host.poll()
            except Exception as exc:  # noqa: BLE001 - keep the fleet going, report at the end
                self._poll_failed(host, exc)
            else:
                self._poll_succeeded(host)
            with self._lock:
                if host.udid in self._again:
                    self._again.discard(host.udid)
                    continue
                self._scheduled.discard(host.udid)
                return

    def _poll_failed(self, host: SimulatedHost, exc: Exception) -> None:
        log.warning("host poll failed: %s", exc)
        self.errors.append(f"{host.udid}: {exc}")

    def _poll_succeeded(self, host: SimulatedHost) -> None:
        """A hook for fleets that keep per-host state about failed polls."""

    def poll_all(self) -> None:
        for host in self.hosts:
            self.wake(host)

    def idle(self) -> bool:
        with self._lock:
            return not self._scheduled

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def start_fake_apns(pki, fleet: Fleet | None = None, port: int = 0) -> FakeApns:
    return FakeApns(str(pki.server_cert), str(pki.server_key), str(pki.push_ca),
                    on_push=fleet.on_push if fleet else None, port=port).start()
