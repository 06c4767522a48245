"""One-time codes in proxy URLs cannot be guessed, replayed or moved to another host.

Against the real ProfileAuthority decision (profile_processor.scep_authorization.ScepAuthority) over the
real tables, in a transaction rolled back after each test; and through the proxy for what it adds
(refusals never echo the code, guessing is limited per client address)."""

from __future__ import annotations

import math
import re
import string
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from mdmscep_common.one_time_codes import code_sha256 as code_hash
from mdmscep_common.proxy_urls import ONE_TIME_CODE as _CODE
from profile_processor.rendering import CODE_BYTES, new_one_time_code
from profile_processor.scep_authorization import ScepAuthority
from scep_proxy.client_limits import REFUSAL_BURST
from tests.support.processor_read_models import copy_owned_rows_to_processor
from tests.support.proxy_world import ProxyWorld

CA = "Code_CA"


def test_codes_are_192_random_bits_in_the_proxy_alphabet():
    assert CODE_BYTES * 8 >= 128
    codes = {new_one_time_code() for _ in range(20_000)}
    assert len(codes) == 20_000  # no repeats
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for code in list(codes)[:500]:
        assert _CODE.fullmatch(code) and set(code) <= alphabet
        assert len(code) >= math.ceil(CODE_BYTES * 8 / 6)
    # Each position takes every symbol about equally often (a crude look at the generator).
    counts = {c: 0 for c in alphabet}
    for code in codes:
        counts[code[0]] += 1
    assert min(counts.values()) > 20_000 / 64 * 0.6


def test_codes_are_stored_as_sha256_only(db_conn):
    columns = {r["column_name"]: r["data_type"] for r in db_conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'scep_codes'").fetchall()}
    assert columns["code_sha256"] == "bytea"
    assert not [c for c in columns if re.fullmatch(r"(one_time_)?code|plain.*|token", c)]


class Deliveries:
    """Rows for ScepAuthority: a CA, a profile using it, enrolled hosts, pending deliveries."""

    def __init__(self, conn):
        self.conn = conn
        self.profile = str(uuid.uuid4())
        challenge = b"\x01" + b"\x00" * 40  # never opened here: the authority reads no secret
        self.ca_id = conn.execute(
            "INSERT INTO certificate_authorities (name, url, challenge_encrypted) VALUES "
            "(%s, 'http://ca.test/scep', %s) RETURNING id", (CA, challenge)).fetchone()["id"]
        conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                     "VALUES (%s, 'p', %s, 'u', 'x', 'c')", (self.profile, "id." + self.profile))
        conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                     "VALUES (%s, %s)", (self.profile, self.ca_id))
        copy_owned_rows_to_processor(conn)

    def host(self, status: str = "pending", enrolled: bool = True) -> tuple[str, str]:
        host, command = str(uuid.uuid4()).upper(), str(uuid.uuid4())
        self.conn.execute("INSERT INTO hosts (uuid, enrolled) VALUES (%s, %s)", (host, enrolled))
        copy_owned_rows_to_processor(self.conn)
        self.conn.execute(
            "INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, status, command_uuid) "
            "VALUES (%s, %s, 'i', %s, %s)", (host, self.profile, status, command))
        return host, command

    def code(self, host: str, command: str, ttl: float = 3600, ca: str = CA) -> str:
        code = new_one_time_code()
        self.conn.execute(
            "INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name, command_uuid, "
            "expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (code_hash(code), host, self.profile, ca, command,
             datetime.now(UTC) + timedelta(seconds=ttl)))
        return code


@pytest.fixture
def rows(db_conn):
    return Deliveries(db_conn)


@pytest.fixture
def authority(db):
    return ScepAuthority(db)


def _ask(authority, rows, host, code, operation="PKIOperation", ca=CA, profile=None):
    return authority.authorize(host, profile or rows.profile, ca, code, operation)


def test_a_code_is_used_once_by_pkioperation_only(authority, rows):
    host, command = rows.host()
    code = rows.code(host, command)
    for operation in ("GetCACaps", "GetCACert", "GetCACaps"):
        assert _ask(authority, rows, host, code, operation).allowed  # checks, does not use up
    assert _ask(authority, rows, host, code).allowed
    again = _ask(authority, rows, host, code)
    assert (again.allowed, again.refusal, again.reason) == (False, ScepRefusal.SCEP_REFUSAL_CODE_USED,
                                                            "one-time code already used")
    assert not _ask(authority, rows, host, code, "GetCACert").allowed


def test_an_expired_code_is_refused(authority, rows):
    host, command = rows.host()
    code = rows.code(host, command, ttl=-1)
    decision = _ask(authority, rows, host, code)
    assert (decision.allowed, decision.refusal, decision.reason) == \
        (False, ScepRefusal.SCEP_REFUSAL_CODE_EXPIRED, "one-time code expired")


def test_a_code_works_only_for_its_host_profile_and_ca(authority, rows):
    host, command = rows.host()
    other, other_command = rows.host()
    code = rows.code(host, command)
    assert not _ask(authority, rows, other, code).allowed  # another host's URL
    assert _ask(authority, rows, other, code).refusal == ScepRefusal.SCEP_REFUSAL_CODE_UNKNOWN
    assert not _ask(authority, rows, host, code, ca="Another_CA").allowed
    assert not _ask(authority, rows, host, code, profile=str(uuid.uuid4())).allowed
    assert _ask(authority, rows, host, code).allowed  # still unused by the attempts above


def test_a_code_of_an_earlier_attempt_is_refused(authority, rows, db_conn):
    host, command = rows.host()
    old = rows.code(host, command)
    db_conn.execute("UPDATE host_profiles SET command_uuid = %s WHERE host_uuid = %s",
                    (str(uuid.uuid4()), host))
    decision = _ask(authority, rows, host, old)
    assert (decision.allowed, decision.reason) == \
        (False, "one-time code superseded by a newer delivery")


@pytest.mark.parametrize("status", ["verifying", "verified", "failed"])
def test_no_code_works_once_the_delivery_is_not_pending(authority, rows, status):
    host, command = rows.host(status=status)
    code = rows.code(host, command)
    assert (_ask(authority, rows, host, code).allowed, _ask(authority, rows, host, code).refusal) \
        == (False, ScepRefusal.SCEP_REFUSAL_NOT_PENDING)


def test_a_host_that_checked_out_has_no_usable_code(authority, rows):
    host, command = rows.host(enrolled=False)
    assert _ask(authority, rows, host, rows.code(host, command)).refusal == \
        ScepRefusal.SCEP_REFUSAL_UNKNOWN_HOST


def test_guessed_codes_are_refused_and_look_alike(authority, rows):
    host, command = rows.host()
    rows.code(host, command)
    reasons = {_ask(authority, rows, host, new_one_time_code()).reason for _ in range(50)}
    assert reasons == {"unknown one-time code"}


# --- through the proxy -----------------------------------------------------------------------

@pytest.fixture
def proxy():
    world = ProxyWorld()
    yield world
    world.close()


def test_the_proxy_never_echoes_a_code_and_limits_guessing_per_client(proxy):
    host, profile, code = proxy.grant()
    guesses = []
    for _ in range(REFUSAL_BURST + 20):
        guess = new_one_time_code()
        response = proxy.client.get(proxy.path(host, profile, guess),
                                    query_string={"operation": "GetCACaps"},
                                    environ_base={"REMOTE_ADDR": "127.0.0.5"})
        guesses.append(response.status_code)
        assert guess not in response.get_data(as_text=True)
    # The first refusals are the processor's 403; then the guessing address is answered 429
    # without asking it, so guessing costs the attacker time and the processor nothing.
    assert guesses[:REFUSAL_BURST] == [403] * REFUSAL_BURST
    assert set(guesses[REFUSAL_BURST:]) == {429}
    asked = [c for c in proxy.fake.calls if c.host_uuid == host]
    assert len(asked) == REFUSAL_BURST
    # The host itself, from its own address, is not touched; nor is any other host.
    assert proxy.client.get(proxy.path(host, profile, code), query_string={
        "operation": "GetCACaps"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    other_host, other_profile, other_code = proxy.grant()
    assert proxy.client.get(proxy.path(other_host, other_profile, other_code),
                            query_string={"operation": "GetCACaps"}).status_code == 200
