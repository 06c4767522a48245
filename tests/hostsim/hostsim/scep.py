"""Certificate enrollment with the real micromdm `scepclient`, as a device's SCEP payload asks."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SCEPCLIENT_TIMEOUT = 120
# scepclient's flags for the subject attributes a SCEP payload may name.
_SUBJECT_FLAGS = {"CN": "-cn", "OU": "-ou", "O": "-organization", "C": "-country",
                  "L": "-locality", "ST": "-province"}

# A Mac makes a key for each SCEP request; a simulated host takes one from a small pool per key
# size instead, made once per process and handed out in turn. scepclient making its own 2048-bit
# key was 150-200 ms of CPU a run against 11-14 ms with the key given: the largest share of the
# test suite's CPU on a 2-core machine. The CA, the proxy and the product see the same requests;
# only several hosts' certificates share a key, which nothing here tells apart.
KEY_POOL_SIZE = 8
_key_pools: dict[int, itertools.cycle] = {}
_key_pool_lock = threading.Lock()


def pooled_key(key_size: int) -> bytes:
    """A PEM RSA key of `key_size` bits from this process's pool."""
    with _key_pool_lock:
        pool = _key_pools.get(key_size)
        if pool is None:
            pool = _key_pools[key_size] = itertools.cycle([
                rsa.generate_private_key(public_exponent=65537, key_size=key_size).private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption())
                for _ in range(KEY_POOL_SIZE)])
        return next(pool)


class ScepEnrollmentFailed(Exception):
    """scepclient did not obtain a certificate; the message is the client's own output."""


@dataclass(frozen=True)
class Enrolled:
    certificate: x509.Certificate
    key_pem: bytes


def subject_flags(subject: list) -> list[str]:
    """`Subject` of a SCEP payload ([[["CN", "x"]], [["OU", "y"]]]) → scepclient flags.

    scepclient fills O, OU and C with its own defaults when not given; we pass the profile's
    values, and empty values for attributes the profile does not name."""
    values = {"O": "", "OU": "", "C": ""}
    for rdn in subject or []:
        for pair in rdn:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] in _SUBJECT_FLAGS:
                values[pair[0]] = str(pair[1])
    flags = []
    for attr, value in values.items():
        flags += [_SUBJECT_FLAGS[attr], value]
    return flags


def enroll(url: str, challenge: str, subject: list, key_size: int = 2048,
           workdir: Path | None = None, key_pem: bytes | None = None) -> Enrolled:
    """Run scepclient in a fresh directory (it reuses CSR files beside its key), with `key_pem`
    (a key made beforehand) or else one of the pool's (pooled_key)."""
    if shutil.which("scepclient") is None:
        raise ScepEnrollmentFailed("scepclient is not installed (Debian package scep)")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="scepclient-", dir=workdir))
    try:
        if key_pem is None and key_size >= 1024:  # the smallest key cryptography makes
            key_pem = pooled_key(key_size)
        if key_pem is not None:
            (directory / "key.pem").write_bytes(key_pem)
        args = ["scepclient", "-server-url", url, "-challenge", challenge,
                "-private-key", str(directory / "key.pem"),
                "-certificate", str(directory / "cert.pem"),
                "-keySize", str(key_size), *subject_flags(subject)]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=SCEPCLIENT_TIMEOUT,
                                  cwd=directory)
        except subprocess.TimeoutExpired:
            raise ScepEnrollmentFailed(f"scepclient timed out after {SCEPCLIENT_TIMEOUT} s") from None
        cert_path = directory / "cert.pem"
        if done.returncode != 0 or not cert_path.exists():
            raise ScepEnrollmentFailed(_client_message(done.stdout + done.stderr))
        return Enrolled(x509.load_pem_x509_certificate(cert_path.read_bytes()),
                        (directory / "key.pem").read_bytes())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _client_message(output: str) -> str:
    """The useful line of scepclient's output: its final error print, else an `err=` field."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith(("ts=", "level="))]
    if plain:
        return plain[-1].strip()[:300]
    for line in reversed(lines):
        match = re.search(r'err="?([^"]+)"?', line) or re.search(r'msg="?([^"]+)"?', line)
        if match:
            return match.group(1).strip()
    return lines[-1][:300] if lines else "scepclient failed without output"


def load_key(key_pem: bytes):
    # The key this host just enrolled with: checking that the RSA key is consistent
    # took tens of milliseconds of CPU per enrollment.
    return serialization.load_pem_private_key(key_pem, password=None,
                                              unsafe_skip_rsa_key_validation=True)
