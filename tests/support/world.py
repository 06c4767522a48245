"""A whole world for end-to-end tests: the stack started by the `make run` launcher (own database
and RabbitMQ vhost), real scepservers (an identity CA and the admin's CAs), an HTTP/2 fake APNs,
and a fleet of simulated Macs woken by it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hostsim.device import SimulatedHost
from hostsim.fleet import Fleet, start_fake_apns
from hostsim.pki import make_apns_pki
from mdmscep_common.db import drop_database
from tests.conftest import ADMIN_TOKEN, AMQP_BASE, PG_BASE, RUN_ID, _rabbitmqctl
from tests.support.scepserver import ScepServer, start_scepserver
from tests.support.stack import Stack, start_stack

ENROLL_SECRET = "e2e-enroll-secret"
API = "/api/v1/fleet"


class Admin:
    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url + API, timeout=60,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def host_profiles(self, host_uuid: str) -> dict[str, dict]:
        rows = self.http.get(f"/hosts/{host_uuid}/configuration_profiles").json()["profiles"]
        return {r["profile_uuid"]: r for r in rows}

    def profile_summary(self, profile_uuid: str) -> dict[str, int]:
        return self.http.get(f"/configuration_profiles/{profile_uuid}/summary").json()


@dataclass
class World:
    stack: Stack
    fleet: Fleet
    apns: object
    admin: Admin
    cas: dict[str, ScepServer]
    root: Path
    serial_prefix: str = "C02E2E"
    hosts: list[SimulatedHost] = field(default_factory=list)

    def enroll(self, count: int, workers: int = 8) -> list[SimulatedHost]:
        start = len(self.fleet.hosts)
        made = [SimulatedHost(self.stack.url("MDM_HTTP_PORT"),
                              serial_number=f"{self.serial_prefix}{start + i:05d}",
                              workdir=self.root / "hosts", client=self.fleet.client)
                for i in range(count)]
        for host in made:
            self.fleet.add_host(host)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda h: h.enroll(ENROLL_SECRET), made))
        return made

    def wait_all(self, hosts, profile_uuid: str, status: str, timeout: float) -> dict[str, dict]:
        """Each host's row of the delivery once every one is in `status`. While the profile's
        summary counts fewer hosts in it, one request a round: asking every host's rows each
        round kept the stack under test busy."""
        deadline = time.monotonic() + timeout

        def rows() -> dict[str, dict]:
            return {h.udid: self.admin.host_profiles(h.udid).get(profile_uuid, {}) for h in hosts}
        while time.monotonic() < deadline:
            if self.admin.profile_summary(profile_uuid).get(status, 0) >= len(hosts):
                last = rows()
                if all(row.get("status") == status for row in last.values()):
                    return last
            time.sleep(0.25)
        raise AssertionError(f"not all {status}: " + ", ".join(
            f"{u[:8]}={r.get('status')}:{r.get('detail', '')[:80]}" for u, r in rows().items()))


@contextlib.contextmanager
def running_world(base_env: dict[str, str], root: Path, name: str,
                  cas: dict[str, tuple[str, str]], **stack_env: str) -> Iterator[World]:
    """`cas`: name → (challenge, organization) of the admin's scepservers to start; `stack_env`
    overrides the stack's environment (AMQP_URL, intervals, HTTP_WORKERS...)."""
    database_url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_{name}"
    drop_database(database_url)
    vhost = f"mdmscep_test_{RUN_ID}_{name}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    servers = {key: start_scepserver(challenge=challenge, organization=organization,
                                     workdir=root / key)
               for key, (challenge, organization) in cas.items()}
    identity = start_scepserver(challenge="identity-challenge", organization="Identity CA",
                                workdir=root / "identity-ca")
    pki = make_apns_pki(root / "apns")
    fleet = Fleet("http://unused", 0, root / "hosts", workers=8)
    apns = start_fake_apns(pki, fleet)
    stack = start_stack({**base_env, "DATABASE_URL": database_url,
                         "AMQP_URL": f"{AMQP_BASE}/{vhost}"}, root / "stack",
                        ENROLL_SECRET=ENROLL_SECRET, IDENTITY_SCEP_URL=identity.url,
                        IDENTITY_SCEP_CHALLENGE="identity-challenge",
                        MDM_IDENTITY_CA_CERTS=str(identity.depot / "ca.pem"),
                        APNS_URL=apns.url, APNS_CERT=str(pki.push_cert), APNS_KEY=str(pki.push_key),
                        APNS_CA_CERTS=str(pki.server_ca),
                        **{"PROFILE_RECONCILE_INTERVAL": "2", "PROFILE_RETRY_BACKOFF": "0.5",
                           "HTTP_WORKERS": "2", **stack_env})
    try:
        stack.wait_healthy(timeout=90)
        yield World(stack, fleet, apns, Admin(stack.admin_url), servers, root)
    finally:
        stack.stop()
        apns.stop()
        fleet.close()
        for server in (*servers.values(), identity):
            server.stop()
        drop_database(database_url)
        _rabbitmqctl("delete_vhost", vhost)
