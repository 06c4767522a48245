"""A batch of due deliveries goes to the Commander in chunks (Reconciler.send_due): rendered one
chunk at a time, each queued while the next is rendered. What must hold whatever the chunking:
a host's commands stay in one call and in their order, and a batch is recorded as sent only if
every one of its calls succeeded."""

from __future__ import annotations

import hashlib
import plistlib
import threading
import time
import uuid

import pytest

from mdmscep_common import mdm_commands
from mdmscep_common.crypto import SecretBox
from mdmscep_common.db import SingleConnectionDatabase
from profile_processor import delivery
from profile_processor.delivery import Reconciler, host_chunks
from profile_processor.store import DeliveryStore
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.recording_publisher import RecordingCommander

HOSTS = 20


def _profile(identifier: str) -> bytes:
    return plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": identifier,
        "PayloadContent": [{"PayloadType": "com.apple.dock", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.dock",
                            "PayloadUUID": str(uuid.uuid4()).upper()}]})


class CallsCommander(RecordingCommander):
    """Answers each call after `delay`, counting the calls in flight; fails the calls that hold
    a host in `failing`."""

    def __init__(self, delay: float = 0.05, failing: frozenset[str] = frozenset()):
        super().__init__()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self._delay = delay
        self._failing = failing

    def enqueue(self, commands):
        with self._lock:
            super().enqueue(commands)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self._delay)
        with self._lock:
            self.in_flight -= 1
        if any(c.host_uuid in self._failing for c in commands):
            raise RuntimeError("the Commander is unavailable")
        return len(commands)


@pytest.fixture
def fleet(db_conn, monkeypatch):
    """HOSTS enrolled hosts, each due for the removal of an old profile and then the install of
    a new one with the same identifier; chunks of 3 hosts."""
    for table in ("host_profiles", "scep_codes", "known_profile_certificate_authorities",
                  "known_profiles", "enrolled_hosts", "ca_pacing"):
        db_conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
    raw = _profile("com.example.dock")
    db_conn.execute("INSERT INTO known_profiles (uuid, name, identifier, raw, checksum, "
                    "has_scep_payload) VALUES ('p-new', 'Dock', 'com.example.dock', %s, %s, "
                    "false)", (raw, hashlib.sha256(raw).digest()))
    db_conn.execute("INSERT INTO enrolled_hosts SELECT 'H-' || lpad(n::text, 3, '0') "
                    "FROM generate_series(1, %s) n", (HOSTS,))
    with db_conn.transaction():
        DeliveryStore().add_missing_deliveries(db_conn)
    # The old profile's removal, due a moment before the install on every host.
    db_conn.execute("""INSERT INTO host_profiles (host_uuid, profile_uuid, operation_type,
                           identifier, next_attempt_at)
                       SELECT uuid, 'p-old', 'remove', 'com.example.dock',
                              now() - interval '1 minute' FROM enrolled_hosts""")
    db_conn.execute("UPDATE host_profiles SET next_attempt_at = now() - interval '30 seconds' "
                    "WHERE profile_uuid = 'p-new'")
    monkeypatch.setattr(delivery, "ENQUEUE_CHUNK_HOSTS", 3)

    def reconciler(commander):
        return Reconciler(SingleConnectionDatabase(db_conn), DeliveryStore(), commander,
                          SecretBox(SERVER_PRIVATE_KEY), "https://proxy.test", code_ttl=3600,
                          verify_interval=3600)
    return reconciler


def test_host_chunks_keep_each_hosts_rows_together_and_in_order():
    rows = [{"host_uuid": h, "n": n} for n, h in enumerate("ABACBDAEFE")]
    chunks = host_chunks(rows, 2)
    assert [[(r["host_uuid"], r["n"]) for r in chunk] for chunk in chunks] == [
        [("A", 0), ("B", 1), ("A", 2), ("B", 4), ("A", 6)],
        [("C", 3), ("D", 5)],
        [("E", 7), ("F", 8), ("E", 9)]]
    assert host_chunks([], 2) == []


def test_a_batch_is_queued_in_concurrent_chunks_each_host_whole_and_in_order(db_conn, fleet):
    commander = CallsCommander()
    assert fleet(commander).send_due(500) == 2 * HOSTS
    assert len(commander.calls) == -(-HOSTS // 3)  # 7 calls of at most 3 hosts
    assert commander.most_in_flight > 1  # queued while the next chunk was rendered
    seen = set()
    for call in commander.calls:
        hosts = [c.host_uuid for c in call]
        assert len(set(hosts)) <= 3 and not seen & set(hosts)
        seen |= set(hosts)
        for host in set(hosts):  # the removal first, then the install, in the same call
            assert [c.request_type for c in call if c.host_uuid == host] == [
                mdm_commands.REMOVE_PROFILE, mdm_commands.INSTALL_PROFILE]
    assert len(seen) == HOSTS
    sent = db_conn.execute("SELECT count(*) AS n FROM host_profiles "
                           "WHERE command_uuid IS NOT NULL AND attempts = 1").fetchone()["n"]
    assert sent == 2 * HOSTS


def test_a_failed_chunk_leaves_the_whole_batch_unsent(db_conn, fleet):
    before = db_conn.execute("SELECT host_uuid, profile_uuid, command_uuid, attempts, "
                             "next_attempt_at FROM host_profiles ORDER BY 1, 2").fetchall()
    commander = CallsCommander(failing=frozenset({"H-010"}))
    with pytest.raises(RuntimeError, match="unavailable"):
        fleet(commander).send_due(500)
    assert len(commander.calls) > 1  # other chunks were queued: all is undone all the same
    after = db_conn.execute("SELECT host_uuid, profile_uuid, command_uuid, attempts, "
                            "next_attempt_at FROM host_profiles ORDER BY 1, 2").fetchall()
    assert after == before
    assert db_conn.execute("SELECT count(*) AS n FROM scep_codes").fetchone()["n"] == 0
    # The next pass sends the whole batch.
    retry = CallsCommander()
    assert fleet(retry).send_due(500) == 2 * HOSTS
    assert sum(len(call) for call in retry.calls) == 2 * HOSTS
