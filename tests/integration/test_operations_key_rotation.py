"""SERVER_PRIVATE_KEY rotation against real PostgreSQL, with the real `admin-config rotate-key`
command: it refuses (changing nothing) while a secret opens with neither key, re-encrypts every
challenge from the previous key to the new one in one go (no old-key ciphertext remains, nothing
else changes, so no profile is re-sent), and afterwards the processor, holding only the new key,
still renders profiles with each CA's challenge."""

from __future__ import annotations

import hashlib
import os
import plistlib
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from admin_config.certificate_authorities import challenge_context
from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from profile_processor.delivery import Reconciler
from profile_processor.store import DeliveryStore
from tests.conftest import PG_BASE, RUN_ID

OLD_KEY = "the-old-server-private-key-0123456789"
NEW_KEY = "the-new-server-private-key-9876543210"
STRANGER_KEY = "a-key-nobody-has-anymore-000000000000"
ADMIN = str(Path(sys.executable).parent / "admin-config")
SEED = (Path(__file__).parent / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
CHALLENGES = {"Test_SCEP": "a&b<c>\"d'", "Second_CA": "second-challenge", "Edited_CA": "edited"}


@pytest.fixture(scope="module")
def rotation_db():
    url = f"{PG_BASE}/mdmscep_test_{RUN_ID}_rotate"
    drop_database(url)
    ensure_database(url)
    apply_migrations(url)
    yield url
    drop_database(url)


def rotate(url: str, *args: str, new=NEW_KEY, previous=OLD_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "SERVER_PRIVATE_KEY": new,
           "SERVER_PRIVATE_KEY_PREVIOUS": previous}
    return subprocess.run([ADMIN, "rotate-key", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def stored(conn) -> dict[str, dict]:
    return {r["name"]: {**r, "challenge_encrypted": bytes(r["challenge_encrypted"])}
            for r in conn.execute("SELECT id, name, challenge_encrypted, updated_at "
                                  "FROM certificate_authorities").fetchall()}


class RecordingCommander:
    def __init__(self):
        self.commands = []

    def enqueue(self, commands):
        self.commands += commands
        return len(commands)


def test_rotate_key_re_encrypts_every_secret_and_every_ca_stays_usable(rotation_db):
    old, new = SecretBox(OLD_KEY), SecretBox(NEW_KEY)
    with psycopg.connect(rotation_db, autocommit=True, row_factory=dict_row) as conn:
        for name, challenge in CHALLENGES.items():
            # Edited_CA was edited during the roll-out: already under the new key.
            box = new if name == "Edited_CA" else old
            conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                         "VALUES (%s, 'http://ca.test/scep', %s)",
                         (name, box.encrypt(challenge, challenge_context(name))))
        conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) VALUES "
                     "('Lost_CA', 'http://ca.test/scep', %s)",
                     (SecretBox(STRANGER_KEY).encrypt("lost", challenge_context("Lost_CA")),))
        before = stored(conn)

        # A secret neither key opens: named, and nothing is written.
        refused = rotate(rotation_db)
        assert refused.returncode != 0
        assert "Lost_CA" in refused.stderr and "nothing was changed" in refused.stderr
        assert stored(conn) == before
        conn.execute("DELETE FROM certificate_authorities WHERE name = 'Lost_CA'")
        del before["Lost_CA"]

        dry = rotate(rotation_db, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would re-encrypt 2 secret(s)" in dry.stdout and stored(conn) == before

        done = rotate(rotation_db)
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 2 secret(s) under SERVER_PRIVATE_KEY; 1 already used it" in done.stdout
        for secret in (*CHALLENGES.values(), OLD_KEY, NEW_KEY):
            assert secret not in done.stdout + done.stderr
        after = stored(conn)
        for name, challenge in CHALLENGES.items():
            ciphertext, context = after[name]["challenge_encrypted"], challenge_context(name)
            assert new.decrypt(ciphertext, context) == challenge  # the new key alone opens it
            with pytest.raises(DecryptionError):
                old.decrypt(ciphertext, context)  # no old-key ciphertext remains
            # Only the ciphertext changed: same revision, so no profile is re-sent.
            assert after[name]["updated_at"] == before[name]["updated_at"]
        assert after["Edited_CA"]["challenge_encrypted"] == before["Edited_CA"]["challenge_encrypted"]

        again = rotate(rotation_db)
        assert "re-encrypted 0 secret(s) under SERVER_PRIVATE_KEY; 3 already used it" in again.stdout

        # The processor with only the new key renders the seed profile with the CA's challenge.
        host = f"H-{uuid.uuid4()}"
        conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (host,))
        conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum, "
                     "has_scep_payload) VALUES ('p-rotate', 'SCEP', 'Fleet.custom.SCEP', 'u', %s, "
                     "%s, true)", (SEED, hashlib.sha256(SEED).digest()))
        conn.execute("INSERT INTO profile_certificate_authorities VALUES ('p-rotate', %s)",
                     (after["Test_SCEP"]["id"],))
    db = Database(rotation_db, max_size=2, name="tests-rotation").open()
    try:
        commander = RecordingCommander()
        Reconciler(db, DeliveryStore(), commander, SecretBox(NEW_KEY), "https://proxy.test",
                   code_ttl=3600, verify_interval=3600).run_pass()
    finally:
        db.close()
    [install] = [c for c in commander.commands if c.host_uuid == host]
    profile = plistlib.loads(install.payload)["Command"]["Payload"]
    assert plistlib.loads(profile)["PayloadContent"][0]["PayloadContent"]["Challenge"] == \
        CHALLENGES["Test_SCEP"]


def test_rotate_key_needs_the_previous_key(rotation_db):
    result = subprocess.run([ADMIN, "rotate-key"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DATABASE_URL": rotation_db,
                                 "SERVER_PRIVATE_KEY": NEW_KEY, "SERVER_PRIVATE_KEY_PREVIOUS": ""})
    assert result.returncode != 0 and "SERVER_PRIVATE_KEY_PREVIOUS" in result.stderr
