"""The scepserver image's entry point, run here against Debian's real `scepserver`: it creates the CA
once in the depot, publishes only the certificate, enforces the challenge from the environment
without putting it on the command line, and always allows renewal."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy.deployfiles import DOCKER_DIR
from tests.support.ports import free_port, wait_for_port

pytestmark = pytest.mark.skipif(shutil.which("scepserver") is None,
                                reason="needs scepserver (`make scep`: Debian package scep)")

ENTRYPOINT = DOCKER_DIR / "scepserver-entrypoint.sh"


def start(depot: Path, public: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SCEP_FILE_DEPOT": str(depot), "SCEP_HTTP_LISTEN_PORT": str(port),
           "SCEP_CHALLENGE_PASSWORD": "entrypoint-challenge-5", "SCEP_CA_PUBLISH_DIR": str(public),
           "SCEP_CA_ORGANIZATION": "entrypoint test CA"}
    process = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=log.open("ab"),
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
    except TimeoutError:
        process.kill()
        process.wait()
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_entrypoint_initialises_once_and_serves_with_env_challenge(tmp_path):
    depot, public, log = tmp_path / "depot", tmp_path / "public", tmp_path / "scepserver.log"
    public.mkdir()
    port = free_port()
    process = start(depot, public, port, log)
    try:
        url = f"http://127.0.0.1:{port}/scep"
        assert httpx.get(url, params={"operation": "GetCACaps"}, timeout=10).status_code == 200
        ca_cert = httpx.get(url, params={"operation": "GetCACert"}, timeout=10)
        assert ca_cert.status_code == 200 and ca_cert.content
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0].endswith(b"scepserver"), "the entry point execs scepserver (signals reach it)"
        assert b"-allowrenew" in argv and argv[argv.index(b"-allowrenew") + 1] == b"0"
        assert b"entrypoint-challenge-5" not in b" ".join(argv)
    finally:
        stop(process)
    first_ca = (depot / "ca.pem").read_bytes()
    assert (public / "ca.pem").read_bytes() == first_ca
    assert {p.name for p in public.iterdir()} == {"ca.pem"}, "the CA key is never published"

    process = start(depot, public, port, log)
    stop(process)
    assert (depot / "ca.pem").read_bytes() == first_ca, "an existing CA is kept"
    assert log.read_text().count("creating one") == 1
