"""The compose entry (Debian's nginx with deploy/nginx/nginx.conf) in front of three real
`scep-proxy http` processes, as `docker compose up --scale scep-proxy=3` runs them: requests
spread over all three, each answered with the real CA's GetCACaps, the `%2C` id intact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_nginx_routing import ADDRESSES, run_nginx
from tests.support.fake_profile_authority import FakeAuthorityServer, FakeProfileAuthority
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nginx") is None, reason="needs Debian's nginx")]

HOST, PROFILE = "6E0DB7D6-1D6B-4C2B-9A43-1E0F5F1C2B3A", "profile-uuid"


def _served(address: str, port: int) -> float:
    metrics = httpx.get(f"http://{address}:{port}/metrics", timeout=5).text
    match = re.search(r'scep_proxy_requests_total\{operation="GetCACaps",status="200"\} (\S+)',
                      metrics)
    return float(match.group(1)) if match else 0.0


def test_requests_spread_over_three_real_proxy_replicas(tmp_path, dns, base_env, custom_ca):
    fake = FakeProfileAuthority()
    fake.add_ca("Test_SCEP", custom_ca.url)
    fake.add_delivery(HOST, PROFILE, "Test_SCEP", any_code=True)
    authority = FakeAuthorityServer(fake)
    ports = {name: free_port() for name in ADDRESSES}
    replicas = []
    for address in ADDRESSES["scep-proxy"]:
        env = {**os.environ, **base_env, "HTTP_BIND_ADDRESS": address, "HTTP_WORKERS": "1",
               "SCEP_PROXY_HTTP_PORT": str(ports["scep-proxy"]),
               "PROCESSOR_GRPC_ADDR": authority.address, "SCEP_PROXY_CACHE_TTL": "0"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        replicas.append(subprocess.Popen([str(Path(sys.executable).parent / "scep-proxy"), "http"],
                                         env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT))
    try:
        for address in ADDRESSES["scep-proxy"]:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://{address}:{ports['scep-proxy']}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"replica {address} did not start"
                time.sleep(0.2)
        with run_nginx(tmp_path, dns.port, ports) as listen:
            target = f"/mdm/scep/proxy/{HOST}%2C{PROFILE}%2CTest_SCEP%2Cany-code?operation=GetCACaps"
            for _ in range(30):
                response = httpx.get(f"http://127.0.0.1:{listen}{target}", timeout=10)
                assert response.status_code == 200, response.text
                assert "POSTPKIOperation" in response.text  # the real CA's capabilities
        served = {a: _served(a, ports["scep-proxy"]) for a in ADDRESSES["scep-proxy"]}
        assert all(n > 0 for n in served.values()), served
        assert sum(served.values()) == 30
        assert {(c.host_uuid, c.profile_uuid, c.ca_name) for c in fake.calls} == \
            {(HOST, PROFILE, "Test_SCEP")}
    finally:
        for process in replicas:
            process.terminate()
            process.wait(30)
        authority.stop()
