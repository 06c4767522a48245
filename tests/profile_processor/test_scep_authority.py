"""ProfileAuthority.AuthorizeScep refuses each wrong case and uses a code up exactly once."""

from __future__ import annotations

import pytest

from admin_config.certificate_authorities import announce_ca
from admin_config.store import CertificateAuthorityStore
from mdmscep.v1 import profile_authority_pb2
from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from mdmscep_common.one_time_codes import code_sha256 as code_hash
from profile_processor.scep_authorization import ProfileAuthorityServicer, ScepAuthority
from tests.support.processor_read_models import apply_recorded_events, copy_owned_rows_to_processor
from tests.support.recording_publisher import RecordingPublisher

HOST, PROFILE, CA, CODE, COMMAND = "HOST-1", "profile-1", "Test_SCEP", "code-abc", "CMD-1"


@pytest.fixture
def authority(db, db_conn):
    db_conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, true), ('HOST-2', false)", (HOST,))
    ca_id = db_conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                            "VALUES (%s, 'http://ca.test/scep', '\\x00') RETURNING id",
                            (CA,)).fetchone()["id"]
    db_conn.execute("INSERT INTO certificate_authorities (name, url, challenge_encrypted) "
                    "VALUES ('Other_CA', 'http://other.test/scep', '\\x00')")
    db_conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                    "VALUES (%s, 'p', 'com.p', 'u', '', '')", (PROFILE,))
    db_conn.execute("INSERT INTO profile_certificate_authorities VALUES (%s, %s)", (PROFILE, ca_id))
    copy_owned_rows_to_processor(db_conn)
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, command_uuid) "
                    "VALUES (%s, %s, 'com.p', %s)", (HOST, PROFILE, COMMAND))
    db_conn.execute("INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, "
                    "command_uuid, expires_at) VALUES (%s, %s, %s, %s, %s, now() + interval '1 hour'),"
                    " (%s, %s, %s, %s, %s, now() - interval '1 second'),"
                    " (%s, %s, %s, %s, 'CMD-OLD', now() + interval '1 hour')",
                    (code_hash(CODE), HOST, PROFILE, CA, COMMAND,
                     code_hash("expired"), HOST, PROFILE, CA, COMMAND,
                     code_hash("old"), HOST, PROFILE, CA))
    return ScepAuthority(db)


def test_cheap_operations_do_not_use_the_code_and_pkioperation_uses_it_once(authority):
    for operation in ("GetCACaps", "GetCACert", "GetCACaps"):
        decision = authority.authorize(HOST, PROFILE, CA, CODE, operation)
        assert decision.allowed and decision.upstream_url == "http://ca.test/scep"
    assert authority.authorize(HOST, PROFILE, CA, CODE, "PKIOperation").allowed
    again = authority.authorize(HOST, PROFILE, CA, CODE, "PKIOperation")
    assert (again.allowed, again.refusal, again.reason) == \
        (False, ScepRefusal.SCEP_REFUSAL_CODE_USED, "one-time code already used")
    assert not authority.authorize(HOST, PROFILE, CA, CODE, "GetCACert").allowed


@pytest.mark.parametrize("host, profile, ca, code, operation, refusal, reason", [
    ("NOPE", PROFILE, CA, CODE, "GetCACert", "UNKNOWN_HOST", "unknown host"),
    ("HOST-2", PROFILE, CA, CODE, "GetCACert", "UNKNOWN_HOST", "unknown host"),  # not enrolled
    (HOST, "nope", CA, CODE, "GetCACert", "UNKNOWN_PROFILE", "unknown profile"),
    (HOST, PROFILE, "Nope", CODE, "GetCACert", "UNKNOWN_CA", "unknown certificate authority"),
    (HOST, PROFILE, "Other_CA", CODE, "GetCACert", "UNKNOWN_CA", "unknown certificate authority"),
    (HOST, PROFILE, CA, "wrong", "PKIOperation", "CODE_UNKNOWN", "unknown one-time code"),
    (HOST, PROFILE, CA, "expired", "PKIOperation", "CODE_EXPIRED", "one-time code expired"),
    (HOST, PROFILE, CA, "old", "PKIOperation", "CODE_SUPERSEDED", "superseded"),
    (HOST, PROFILE, CA, CODE, "GetNextCACert", "UNKNOWN_OPERATION", "unknown SCEP operation"),
])
def test_refusals(authority, host, profile, ca, code, operation, refusal, reason):
    decision = authority.authorize(host, profile, ca, code, operation)
    assert not decision.allowed
    assert ScepRefusal.Name(decision.refusal) == f"SCEP_REFUSAL_{refusal}"
    assert reason in decision.reason
    assert authority.authorize(HOST, PROFILE, CA, CODE, "GetCACert").allowed  # code still usable


@pytest.mark.parametrize("status", ["verifying", "verified", "failed"])
def test_delivery_not_pending_is_refused(authority, db_conn, status):
    db_conn.execute("UPDATE host_profiles SET status = %s", (status,))
    decision = authority.authorize(HOST, PROFILE, CA, CODE, "PKIOperation")
    assert (decision.allowed, decision.refusal) == (False, ScepRefusal.SCEP_REFUSAL_NOT_PENDING)


def test_an_allowed_request_carries_the_cas_limit_as_the_admin_last_set_it(authority, db_conn):
    servicer = ProfileAuthorityServicer(authority)

    def answer(code=CODE, operation="GetCACaps"):
        return servicer.AuthorizeScep(profile_authority_pb2.AuthorizeScepRequest(
            host_uuid=HOST, profile_uuid=PROFILE, ca_name=CA, one_time_code=code,
            operation=operation), None)

    assert (answer().allowed, answer().max_concurrent_requests) == (True, 4)  # the default
    ca_id = db_conn.execute("SELECT id FROM certificate_authorities WHERE name = %s",
                            (CA,)).fetchone()["id"]
    # As PATCH writes and announces it; the processor's copy takes the event.
    events = RecordingPublisher()
    announce_ca(events, db_conn, "edited",
                CertificateAuthorityStore().set_limits(db_conn, ca_id, 9, None), resend=False)
    assert answer().max_concurrent_requests == 4  # not before the event
    assert apply_recorded_events(db_conn, events) == 1
    assert answer().max_concurrent_requests == 9
    assert answer(operation="PKIOperation").max_concurrent_requests == 9
    refused = answer(code="wrong")
    assert (refused.allowed, refused.max_concurrent_requests) == (False, 0)
