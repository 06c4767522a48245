"""A real micromdm scepserver (Debian package `scep`) in a temporary depot, for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ScepServer:
    port: int
    depot: Path
    challenge: str | None
    process: subprocess.Popen = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scep"

    @property
    def ca_pem(self) -> bytes:
        return (self.depot / "ca.pem").read_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_scepserver(challenge: str | None = None, organization: str = "mdmscep test CA",
                     workdir: Path | None = None, valid_days: int | None = None,
                     csr_verifier: Path | None = None,
                     env: dict[str, str] | None = None) -> ScepServer:
    if shutil.which("scepserver") is None:
        raise RuntimeError("scepserver is not installed: run `make scep` (Debian package scep)")
    root = Path(workdir or tempfile.mkdtemp(prefix="scepserver-"))
    depot = root / "depot"
    subprocess.run(["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048",
                    "-organization", organization], check=True, capture_output=True, timeout=60)
    port = free_port()
    log_path = root / "scepserver.log"
    args = ["scepserver", "-depot", str(depot), "-port", str(port), "-allowrenew", "0", "-debug"]
    if challenge is not None:
        args += ["-challenge", challenge]
    if valid_days is not None:
        args += ["-crtvalid", str(valid_days)]
    if csr_verifier is not None:
        args += ["-csrverifierexec", str(csr_verifier)]
    process = subprocess.Popen(args, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    wait_for_port(port)
    return ScepServer(port, depot, challenge, process, log_path)


def direct_rate(url: str, challenge: str, key_pem: bytes, clients: int, seconds: float) -> float:
    """Certificates per second a CA issues straight to `clients` scepclients at once, no product
    in between (a fresh directory and a distinct subject each time; the key made beforehand)."""
    done, stop, lock = [0], time.monotonic() + seconds, threading.Lock()

    def client(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            workdir = Path(tempfile.mkdtemp(prefix="direct-"))
            try:
                (workdir / "key.pem").write_bytes(key_pem)
                result = subprocess.run(
                    ["scepclient", "-server-url", url, "-challenge", challenge, "-private-key",
                     str(workdir / "key.pem"), "-certificate", str(workdir / "cert.pem"),
                     "-cn", f"direct-{n}-{i}"], capture_output=True, cwd=workdir, timeout=60)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            if result.returncode == 0 and time.monotonic() < stop:
                with lock:
                    done[0] += 1
            i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / seconds if time.monotonic() >= stop else done[0] / (
        time.monotonic() - started)
