"""SERVER_PRIVATE_KEY: "a secret of at least 32 characters; the whole value, through a
key-derivation function, keys AES-256-GCM encryption of secrets at rest. Required only by the
services that encrypt or decrypt (they refuse to start without it, and refuse known placeholder
values); the others must not need it."

- Every character counts: two keys sharing their first 32 characters do not open each other's
  secrets (they did when the first 32 bytes were the AES key).
- Known placeholders are refused with a configuration error naming the variable: every example
  value this repository ships, and obvious ones; the tests' key is accepted.
- The real entry points: both scep-proxy processes start and serve without the key, and so do the
  two workers that never encrypt nor decrypt (`admin-config worker`, `mdm-endpoint push`), which
  ignore it when set; every other process of admin-config, the processor and mdm-endpoint refuses
  to start without it (exit status 78, naming it), or with a placeholder.
- Secrets stored in the legacy format still open, and rotate-key re-encrypts them
  (tests/common/test_operations_key_rotation.py runs the commands against real PostgreSQL).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.settings import SettingsError
from tests.conftest import ROOT, SERVER_PRIVATE_KEY
from tests.support.legacy_secrets import seal_v1
from tests.support.ports import free_port
from tests.support.settings import load_settings
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent
# Where the repository shows how to set the key (documentation, deployment files, examples).
EXAMPLE_FILES = ["README.md", "docker-compose.yml", "Makefile", "docs/**/*", "deploy/**/*",
                 ".env*", "**/*.env.example"]
ASSIGNED = re.compile(r"SERVER_PRIVATE_KEY\s*[:=]\s*[\"']?([^\s\"'$`]{8,})")


def shipped_example_keys() -> set[str]:
    values = set()
    for pattern in EXAMPLE_FILES:
        for path in ROOT.glob(pattern):
            if path.is_file() and ".venv" not in path.parts:
                values.update(ASSIGNED.findall(path.read_text(errors="replace")))
    return values


def refusal(key: str) -> str:
    with pytest.raises(SettingsError) as refused:
        load_settings({"SERVER_PRIVATE_KEY": key})
    return str(refused.value)


def test_two_keys_sharing_their_first_32_characters_do_not_open_each_others_secrets():
    first, second = SERVER_PRIVATE_KEY + "-first", SERVER_PRIVATE_KEY + "-second"
    assert first[:32] == second[:32]
    stored = SecretBox(first).encrypt("challenge", b"ca:1")
    assert SecretBox(first).decrypt(stored, b"ca:1") == "challenge"
    with pytest.raises(DecryptionError):
        SecretBox(second).decrypt(stored, b"ca:1")
    with pytest.raises(DecryptionError):
        SecretBox(second).open(SecretBox(first).seal(b"<plist/>", b"row"), b"row")


def test_every_example_value_the_repository_ships_is_refused():
    examples = shipped_example_keys()
    assert "EXAMPLE-ONLY-replace-with-openssl-rand-hex-32" in examples  # the k8s example Secret
    for key in examples:
        assert refusal(key).startswith("SERVER_PRIVATE_KEY "), key


@pytest.mark.parametrize("key", [
    "changeme-changeme-changeme-changeme",
    "CHANGE_ME_TO_A_LONG_RANDOM_SECRET_VALUE",
    "please-replace-with-a-real-secret-value",
    "your-secret-key-goes-here-0123456789",
    "x" * 32,
    "0" * 64,
    "abcabcabcabcabcabcabcabcabcabcabcabc",
    "passwordpasswordpasswordpassword",
    "1212121212121212121211212121212121",  # two characters only
])
def test_obvious_placeholders_are_refused_naming_the_variable(key):
    assert refusal(key).startswith("SERVER_PRIVATE_KEY ")


def test_short_and_missing_keys_are_refused_and_real_ones_accepted():
    assert "at least 32 characters" in refusal("s3cr3t-but-short")
    with pytest.raises(SettingsError, match="SERVER_PRIVATE_KEY is required"):
        load_settings({})
    for key in (SERVER_PRIVATE_KEY,  # the tests' key
                "9f2c4e7a1b3d5f60c8e1a2b4d6f8091a3c5e7b9d0f2a4c6e8b1d3f5a7c9e0b2d",  # openssl rand
                "demo-" + uuid.uuid4().hex + uuid.uuid4().hex):  # deploy/local/demo.py's
        assert load_settings({"SERVER_PRIVATE_KEY": key}).server_private_key == key
    # A placeholder still works as the key being rotated away from.
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "SERVER_PRIVATE_KEY_PREVIOUS": "x" * 32})
    assert settings.server_private_key_previous == "x" * 32


def test_legacy_secrets_still_open_and_are_not_taken_as_under_the_current_key():
    legacy = seal_v1(SERVER_PRIVATE_KEY, b"a&b<c>", b"ca:1")
    box = SecretBox(SERVER_PRIVATE_KEY)
    assert box.decrypt(legacy, b"ca:1") == "a&b<c>"
    assert not box.opens_with_current_key(legacy, b"ca:1")
    assert box.opens_with_current_key(box.encrypt("a&b<c>", b"ca:1"), b"ca:1")
    with pytest.raises(DecryptionError):
        box.decrypt(legacy, b"ca:2")


# --- the real entry points -------------------------------------------------------------------

def _env_without_key(base_env, **extra) -> dict[str, str]:
    env = {**os.environ, **base_env}
    for name in ("SERVER_PRIVATE_KEY", "SERVER_PRIVATE_KEY_PREVIOUS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return {**env, **extra}


@pytest.mark.parametrize("command", [["admin-config", "serve"], ["admin-config", "rotate-key"],
                                     ["profile-processor"], ["mdm-endpoint", "http"],
                                     ["mdm-endpoint", "grpc"], ["mdm-endpoint", "rotate-key"]])
def test_the_services_that_encrypt_or_decrypt_refuse_to_start_without_it(command, base_env):
    missing = subprocess.run([str(BIN / command[0]), *command[1:]], env=_env_without_key(base_env),
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 78 and "SERVER_PRIVATE_KEY is required" in missing.stderr
    placeholder = subprocess.run(
        [str(BIN / command[0]), *command[1:]], capture_output=True, text=True, timeout=60,
        env=_env_without_key(base_env, SERVER_PRIVATE_KEY="EXAMPLE-ONLY-replace-with-openssl-rand-hex-32"))
    assert placeholder.returncode == 78
    assert "configuration error: SERVER_PRIVATE_KEY is an example value" in placeholder.stderr


def test_both_scep_proxy_processes_and_the_migrations_run_without_it(base_env, tmp_path):
    migrate = subprocess.run([str(BIN / "mdmscep-migrate")], env=_env_without_key(base_env),
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = _env_without_key(base_env, SCEP_PROXY_HTTP_PORT=str(http_port), HTTP_WORKERS="1",
                           HTTP_BIND_ADDRESS="127.0.0.1", SCEP_PROXY_GRPC_PORT=str(grpc_port),
                           SCEP_PROXY_GRPC_METRICS_PORT=str(metrics_port))
    processes = [subprocess.Popen([str(BIN / "scep-proxy"), role], env=env,
                                  stdout=(tmp_path / f"{role}.log").open("wb"),
                                  stderr=subprocess.STDOUT) for role in ("http", "grpc")]

    def answers(port: int) -> bool:
        assert all(p.poll() is None for p in processes), [
            (tmp_path / f"{role}.log").read_text() for role in ("http", "grpc")]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/{'healthz' if port == http_port else 'metrics'}",
                             timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: answers(http_port), 60, "scep-proxy http answering /healthz")
        # scep-proxy grpc serves its metrics once its gRPC server has started.
        wait_for(lambda: answers(metrics_port), 60, "scep-proxy grpc started")
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


@pytest.mark.parametrize("command, metrics_variable", [
    (["admin-config", "worker"], "ADMIN_WORKER_METRICS_PORT"),
    (["mdm-endpoint", "push"], "MDM_PUSH_METRICS_PORT"),  # on the edge network: reaches APNs
])
def test_the_workers_run_without_it_and_never_read_it(command, metrics_variable, base_env,
                                                      tmp_path):
    """Started without the key, and with a placeholder every process that reads it refuses: both
    serve their metrics, which they do once their worker is built."""
    ports = [free_port(), free_port()]
    envs = [_env_without_key(base_env, **{metrics_variable: str(ports[0])}),
            _env_without_key(base_env, SERVER_PRIVATE_KEY="EXAMPLE-ONLY-replace-with-openssl-rand-hex-32",
                             **{metrics_variable: str(ports[1])})]
    logs = [tmp_path / "without-key.log", tmp_path / "placeholder-key.log"]
    processes = [subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env,
                                  stdout=log.open("wb"), stderr=subprocess.STDOUT)
                 for env, log in zip(envs, logs, strict=True)]

    def answers(port: int) -> bool:
        assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        for port in ports:
            wait_for(lambda port=port: answers(port), 60, f"{' '.join(command)} started")
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    for log in logs:
        assert "SERVER_PRIVATE_KEY" not in log.read_text()
