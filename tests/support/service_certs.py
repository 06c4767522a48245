"""The tests' internal gRPC PKI: one service CA and a certificate per service, issued once per
test process with mdmscep_common.service_pki (the module behind `mdmscep-service-pki`), in a
temporary directory removed at exit. In-process servers and clients, and the processes tests
start on their own, take their identities from here; a stack started with the launcher issues
its own (tests/support/stack.py)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from mdmscep_common.service_pki import CA_FILE, CERT_FILE, KEY_FILE, write_service_pki
from mdmscep_common.service_tls import ServiceTls


def _issue(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    write_service_pki(root)
    return root


@functools.cache
def service_pki_dir() -> Path:
    """The service CA the tests' servers and clients trust."""
    return _issue("mdmscep-test-service-pki-")


@functools.cache
def other_pki_dir() -> Path:
    """A second, unrelated service CA with the same service names: what an outsider with a
    certificate from another CA holds."""
    return _issue("mdmscep-test-other-pki-")


def tls_env(service: str, pki_dir: Path | None = None) -> dict[str, str]:
    """GRPC_TLS_* for a process (or load_settings) that is `service`."""
    root = pki_dir or service_pki_dir()
    return {"GRPC_TLS_CA_CERT": str(root / CA_FILE),
            "GRPC_TLS_CERT": str(root / service / CERT_FILE),
            "GRPC_TLS_KEY": str(root / service / KEY_FILE)}


def service_tls(service: str, pki_dir: Path | None = None) -> ServiceTls:
    env = tls_env(service, pki_dir)
    return ServiceTls.from_files(service, env["GRPC_TLS_CA_CERT"], env["GRPC_TLS_CERT"],
                                 env["GRPC_TLS_KEY"])
