"""SERVER_PRIVATE_KEY rotation against real PostgreSQL, with the real `admin-config rotate-key`
command: it refuses (changing nothing) while a secret opens with neither key, re-encrypts every
challenge from the previous key (or the legacy format) to the new one in one go (no old-key
ciphertext remains, nothing else changes, so no profile is re-sent), and afterwards the
processor, holding only the new key, still renders profiles with each CA's challenge. And the
real `mdm-endpoint rotate-key` for the queued command payloads."""

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
from mdm_endpoint.command_payloads import open_payload, payload_context, seal_payload
from mdmscep_common import mdm_commands
from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.db import Database, drop_database, ensure_database
from mdmscep_common.migrate import apply_migrations
from profile_processor.delivery import Reconciler
from profile_processor.store import DeliveryStore
from tests.conftest import PG_BASE, RUN_ID
from tests.support.legacy_secrets import seal_v1
from tests.support.processor_read_models import apply_outbox_events, copy_owned_rows_to_processor
from tests.support.recording_publisher import RecordingCommander

OLD_KEY = "the-old-server-private-key-0123456789"
NEW_KEY = "the-new-server-private-key-9876543210"
STRANGER_KEY = "a-key-nobody-has-anymore-000000000000"
ADMIN = str(Path(sys.executable).parent / "admin-config")
MDM_ENDPOINT = str(Path(sys.executable).parent / "mdm-endpoint")
SEED = (Path(__file__).parents[1] / "testdata" / "seed_scep_profile.mobileconfig").read_bytes()
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

        # The processor's copy of the CAs, as their events left it: under the old keys.
        copy_owned_rows_to_processor(conn)

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

        # Each re-encrypted CA was announced: the processor's copy takes the new ciphertexts
        # (the dry run and the refused run announced nothing).
        assert apply_outbox_events(conn, "admin_config.admin_config_outbox") == 2
        copies = {r["name"]: bytes(r["challenge_encrypted"]) for r in conn.execute(
            "SELECT name, challenge_encrypted FROM profile_processor.known_certificate_authorities")}
        assert copies == {name: after[name]["challenge_encrypted"] for name in CHALLENGES}

        # The processor with only the new key renders the seed profile with the CA's challenge.
        host = f"H-{uuid.uuid4()}"
        conn.execute("INSERT INTO profile_processor.enrolled_hosts (uuid) VALUES (%s)", (host,))
        conn.execute("INSERT INTO profile_processor.known_profiles (uuid, name, identifier, raw, "
                     "checksum, has_scep_payload) VALUES ('p-rotate', 'SCEP', "
                     "'Fleet.custom.SCEP', %s, %s, true)", (SEED, hashlib.sha256(SEED).digest()))
        conn.execute("INSERT INTO profile_processor.known_profile_certificate_authorities "
                     "VALUES ('p-rotate', %s)", (after["Test_SCEP"]["id"],))
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


def test_rotate_key_re_encrypts_legacy_secrets_of_the_current_key_without_a_previous_key(
        rotation_db):
    """A challenge stored before format 2 (keyed with the first 32 bytes of the key) still opens,
    is not "under the current key", and rotate-key, needing no previous key for it, re-encrypts
    it in the current format."""
    context = challenge_context("Legacy_CA")
    legacy = seal_v1(NEW_KEY, b"legacy&challenge", context)
    assert SecretBox(NEW_KEY).decrypt(legacy, context) == "legacy&challenge"
    assert not SecretBox(NEW_KEY).opens_with_current_key(legacy, context)
    with psycopg.connect(rotation_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                     "VALUES ('Legacy_CA', 'http://ca.test/scep', %s)", (legacy,))
        try:
            done = rotate(rotation_db, previous="")
            assert done.returncode == 0, done.stderr
            assert "re-encrypted 1 secret(s) under SERVER_PRIVATE_KEY" in done.stdout
            after = stored(conn)["Legacy_CA"]["challenge_encrypted"]
            assert after[:1] == b"\x02" and SecretBox(NEW_KEY).opens_with_current_key(after, context)
            assert SecretBox(NEW_KEY).decrypt(after, context) == "legacy&challenge"
        finally:
            conn.execute("DELETE FROM certificate_authorities WHERE name = 'Legacy_CA'")


def test_rotate_key_without_the_previous_key_names_it_for_secrets_under_another_key(rotation_db):
    context = challenge_context("Old_Key_CA")
    with psycopg.connect(rotation_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                     "VALUES ('Old_Key_CA', 'http://ca.test/scep', %s)",
                     (SecretBox(OLD_KEY).encrypt("old", context),))
        try:
            before = stored(conn)
            result = rotate(rotation_db, previous="")
            assert result.returncode != 0
            assert "Old_Key_CA" in result.stderr and "SERVER_PRIVATE_KEY_PREVIOUS" in result.stderr
            assert stored(conn) == before
        finally:
            conn.execute("DELETE FROM certificate_authorities WHERE name = 'Old_Key_CA'")


def rotate_commands(url: str, *args: str, new=NEW_KEY, previous=OLD_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "SERVER_PRIVATE_KEY": new,
           "SERVER_PRIVATE_KEY_PREVIOUS": previous}
    return subprocess.run([MDM_ENDPOINT, "rotate-key", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_mdm_endpoint_rotate_key_brings_every_command_payload_under_the_new_key(rotation_db):
    """Queued command payloads (rendered profiles: challenges and live codes) are mdm-endpoint's:
    `mdm-endpoint rotate-key` re-encrypts those under the previous key or in the legacy format,
    seals those stored in clear by an older version, reports (without failing) a queued one no
    key opens, and changes nothing else; the host still gets each command as it was queued."""
    host = f"H-{uuid.uuid4()}"
    plists = {name: mdm_commands.profile_list(mdm_commands.new_command_uuid())
              for name in ("clear", "previous", "legacy", "current", "lost")}
    uuids = {name: plistlib.loads(p)["CommandUUID"] for name, p in plists.items()}

    def sealed(name, box):
        return seal_payload(box, host, uuids[name], plists[name])

    stored_payloads = {
        "clear": plists["clear"],  # queued by a version that stored payloads in clear
        "previous": sealed("previous", SecretBox(OLD_KEY)),
        "legacy": seal_v1(NEW_KEY, plists["legacy"], payload_context(host, uuids["legacy"])),
        "current": sealed("current", SecretBox(NEW_KEY)),
        "lost": sealed("lost", SecretBox(STRANGER_KEY)),
    }
    statuses = {"legacy": "acknowledged"}  # finished commands are rotated too

    def rows(conn):
        return {r["command_uuid"]: (r["status"], bytes(r["payload"])) for r in conn.execute(
            "SELECT command_uuid, status, payload FROM commands WHERE host_uuid = %s",
            (host,)).fetchall()}

    with psycopg.connect(rotation_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (host,))
        for name, payload in stored_payloads.items():
            conn.execute("INSERT INTO commands (host_uuid, command_uuid, request_type, payload, "
                         "status) VALUES (%s, %s, 'ProfileList', %s, %s)",
                         (host, uuids[name], payload, statuses.get(name, "queued")))
        before = rows(conn)

        dry = rotate_commands(rotation_db, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would re-encrypt 3 command payload(s)" in dry.stdout and rows(conn) == before

        done = rotate_commands(rotation_db)
        assert done.returncode == 0, done.stderr
        assert ("re-encrypted 3 command payload(s) under SERVER_PRIVATE_KEY (2 from the previous "
                "key or the legacy format, 1 stored in clear); 1 already used it") in done.stdout
        assert "1 queued command(s) open with neither key" in done.stderr
        assert uuids["lost"] in done.stderr
        for secret in (OLD_KEY, NEW_KEY, STRANGER_KEY):
            assert secret not in done.stdout + done.stderr
        after = rows(conn)
        new = SecretBox(NEW_KEY)
        for name in ("clear", "previous", "legacy", "current"):
            status, payload = after[uuids[name]]
            context = payload_context(host, uuids[name])
            assert status == before[uuids[name]][0]
            assert new.opens_with_current_key(payload, context)
            assert open_payload(new, host, uuids[name], payload) == plists[name]
            with pytest.raises(DecryptionError):
                SecretBox(OLD_KEY).open(payload, context)
        assert after[uuids["current"]] == before[uuids["current"]]  # nothing to do: untouched
        assert after[uuids["lost"]] == before[uuids["lost"]]

        again = rotate_commands(rotation_db)
        assert "re-encrypted 0 command payload(s)" in again.stdout
        assert "4 already used it" in again.stdout
        conn.execute("DELETE FROM hosts WHERE uuid = %s", (host,))


def test_mdm_endpoint_rotate_key_never_waits_for_a_check_in_and_says_what_it_left(rotation_db):
    """A row a check-in holds is skipped (no waiting, so no deadlock with check-ins), tried again
    in later rounds, and reported with exit status 1 if it stayed busy; a second run does it."""
    host, command_uuid = f"H-{uuid.uuid4()}", mdm_commands.new_command_uuid()
    with psycopg.connect(rotation_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true)", (host,))
        conn.execute("INSERT INTO commands (host_uuid, command_uuid, request_type, payload) "
                     "VALUES (%s, %s, 'ProfileList', %s)",
                     (host, command_uuid, seal_payload(SecretBox(OLD_KEY), host, command_uuid,
                                                       mdm_commands.profile_list(command_uuid))))
        with psycopg.connect(rotation_db) as check_in:  # holds the row, as /mdm/connect does
            check_in.execute("SELECT 1 FROM commands WHERE command_uuid = %s FOR UPDATE",
                             (command_uuid,))
            busy = rotate_commands(rotation_db)
            check_in.rollback()
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert "1 command(s) were in use by check-ins each time: run rotate-key again" in busy.stderr
        done = rotate_commands(rotation_db)
        assert done.returncode == 0 and "re-encrypted 1 command payload(s)" in done.stdout
        payload = bytes(conn.execute("SELECT payload FROM commands WHERE command_uuid = %s",
                                     (command_uuid,)).fetchone()["payload"])
        assert SecretBox(NEW_KEY).opens_with_current_key(payload, payload_context(host, command_uuid))
        conn.execute("DELETE FROM hosts WHERE uuid = %s", (host,))
