"""The processor's read models of admin-config's CAs and profiles and mdm-endpoint's enrolled hosts
(profile_processor/read_models.py): each event's state applies only when it is newer than the
last applied to that row, so redelivered or reordered events never bring back an old state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from mdmscep_common import bus, config_events
from mdmscep_common.bus import PoisonMessage
from profile_processor import read_models


def _ca_event(sequence: int, action: str = "edited", url: str = "http://ca.test/scep",
              limit: int = 4, ca_id: int = 7):
    row = SimpleNamespace(id=ca_id, name="Test_SCEP", url=url, challenge_encrypted=b"\x02sealed",
                          ca_certificates_pem="", max_concurrent_requests=limit,
                          max_issuance_per_second=None,
                          updated_at=datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=UTC))
    return {"kind": "certificate_authority", "action": action, "id": ca_id, "name": row.name,
            "resend": False, "sequence": sequence,
            "certificate_authority": (None if action == "deleted"
                                      else config_events.certificate_authority_state(row))}


def _profile_event(sequence: int, profile_uuid: str, name: str = "SCEP", ca_ids=(7,),
                   deleted: bool = False):
    row = {"uuid": profile_uuid, "identifier": "com.example.scep", "name": name,
           "raw": b"<plist/>", "checksum": b"\x01" * 32, "has_scep_payload": True,
           "ca_ids": list(ca_ids)}
    return {"kind": "profile", "action": "deleted" if deleted else "edited",
            "profile_uuid": profile_uuid, "sequence": sequence,
            "profile": None if deleted else config_events.profile_state(row)}


def _ca(conn, ca_id: int = 7):
    return conn.execute("SELECT url, max_concurrent_requests, updated_at, challenge_encrypted "
                        "FROM known_certificate_authorities WHERE id = %s", (ca_id,)).fetchone()


def _profile(conn, profile_uuid: str):
    row = conn.execute("SELECT name, raw, has_scep_payload FROM known_profiles WHERE uuid = %s",
                       (profile_uuid,)).fetchone()
    cas = [r["ca_id"] for r in conn.execute(
        "SELECT ca_id FROM known_profile_certificate_authorities WHERE profile_uuid = %s "
        "ORDER BY ca_id", (profile_uuid,))]
    return row and {**row, "raw": bytes(row["raw"]), "ca_ids": cas}


def test_a_cas_state_is_kept_as_admin_config_sent_it(db_conn):
    assert read_models.apply_config_change(db_conn, _ca_event(10, action="added"))
    row = _ca(db_conn)
    assert (row["url"], row["max_concurrent_requests"], bytes(row["challenge_encrypted"])) == \
        ("http://ca.test/scep", 4, b"\x02sealed")
    # The revision's part (its epoch text) is exactly the owner's, microseconds included.
    assert row["updated_at"] == datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=UTC)


def test_an_older_event_arriving_late_changes_nothing(db_conn):
    assert read_models.apply_config_change(db_conn, _ca_event(10, limit=4))
    assert read_models.apply_config_change(db_conn, _ca_event(12, limit=9))
    assert not read_models.apply_config_change(db_conn, _ca_event(11, limit=2))
    assert not read_models.apply_config_change(db_conn, _ca_event(12, limit=2))  # redelivered
    assert _ca(db_conn)["max_concurrent_requests"] == 9


def test_a_deleted_row_is_not_brought_back_by_a_late_edit(db_conn):
    profile = str(uuid.uuid4())
    assert read_models.apply_config_change(db_conn, _profile_event(20, profile))
    assert read_models.apply_config_change(db_conn, _profile_event(22, profile, deleted=True))
    assert _profile(db_conn, profile) is None
    assert not read_models.apply_config_change(db_conn, _profile_event(21, profile, name="late"))
    assert _profile(db_conn, profile) is None
    assert read_models.apply_config_change(db_conn, _ca_event(30, action="deleted"))
    assert _ca(db_conn) is None


def test_a_profiles_cas_are_replaced_with_its_state(db_conn):
    profile = str(uuid.uuid4())
    read_models.apply_config_change(db_conn, _profile_event(40, profile, ca_ids=(7, 8)))
    assert _profile(db_conn, profile) == {"name": "SCEP", "raw": b"<plist/>",
                                          "has_scep_payload": True, "ca_ids": [7, 8]}
    read_models.apply_config_change(db_conn, _profile_event(41, profile, name="v2", ca_ids=(8,)))
    assert _profile(db_conn, profile)["ca_ids"] == [8]
    assert _profile(db_conn, profile)["name"] == "v2"


def test_host_events_keep_the_enrolled_hosts_in_order(db_conn):
    host = f"HOST-{uuid.uuid4()}"

    def enrolled() -> bool:
        return db_conn.execute("SELECT 1 FROM enrolled_hosts WHERE uuid = %s",
                               (host,)).fetchone() is not None

    assert read_models.apply_host_event(db_conn, bus.HOST_ENROLLED, {"host_uuid": host,
                                                                      "sequence": 5})
    assert enrolled()
    # Checked out, then enrolled again: the re-enrollment arrives first.
    assert read_models.apply_host_event(db_conn, bus.HOST_ENROLLED, {"host_uuid": host,
                                                                      "sequence": 9})
    assert not read_models.apply_host_event(db_conn, bus.HOST_CHECKED_OUT,
                                            {"host_uuid": host, "sequence": 7})
    assert enrolled()
    assert read_models.apply_host_event(db_conn, bus.HOST_DELETED, {"host_uuid": host,
                                                                     "sequence": 11})
    assert not enrolled()


def test_events_without_state_or_sequence_are_ignored(db_conn):
    """Published before events carried state: the migration seeded the copy after them."""
    legacy = {"kind": "profile", "action": "added", "profile_uuid": str(uuid.uuid4())}
    before = db_conn.execute("SELECT count(*) AS n FROM read_model_sequences").fetchone()["n"]
    assert not read_models.apply_config_change(db_conn, legacy)
    assert not read_models.apply_config_change(db_conn, {**legacy, "sequence": 3})
    assert not read_models.apply_host_event(db_conn, bus.HOST_ENROLLED, {"host_uuid": "H"})
    assert db_conn.execute("SELECT count(*) AS n FROM read_model_sequences").fetchone()["n"] == before


@pytest.mark.parametrize("event", [
    {"kind": "team", "sequence": 1},
    {"kind": "profile", "sequence": 1, "profile": {"uuid": "p"}},
    {"kind": "profile", "sequence": 1, "profile": None},
    {"kind": "profile", "sequence": 1, "profile": {
        "uuid": "p", "identifier": "i", "name": "n", "raw": "not base64!", "checksum": "00",
        "has_scep_payload": False, "ca_ids": []}},
    {"kind": "certificate_authority", "sequence": 1, "certificate_authority": None},
    {"kind": "certificate_authority", "sequence": 1, "certificate_authority": {"id": "x"}},
])
def test_a_malformed_state_is_a_poison_message_and_changes_nothing(db_conn, event):
    def applied() -> int:
        return db_conn.execute("SELECT count(*) AS n FROM read_model_sequences").fetchone()["n"]

    before = applied()
    with pytest.raises(PoisonMessage):
        read_models.apply_config_change(db_conn, event)
    assert applied() == before


def test_a_host_event_without_host_is_a_poison_message(db_conn):
    with pytest.raises(PoisonMessage):
        read_models.apply_host_event(db_conn, bus.HOST_ENROLLED, {"sequence": 1})
