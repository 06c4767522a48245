"""Secrets never leave through API answers, error texts, log lines or metrics labels (in-process;
the captured logs of a whole run, faults included, are scanned at the end of tests/faults).

- A CA's challenge: never in any admin API answer (create, read, list, edit, activities, errors)
  and masked in log lines of the process that saw it.
- A one-time code: never in the proxy's refusal text, even when the processor's reason quotes it.
- Configuration secrets (SERVER_PRIVATE_KEY, ADMIN_API_TOKEN, ENROLL_SECRET, the identity SCEP
  challenge) are masked in every log line, extras and tracebacks included.
"""

from __future__ import annotations

import io
import json
import logging
import types
import uuid

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from admin_config.app import build_services, create_app
from admin_config.scep_gateway import ProbeOutcome
from mdmscep_common import fleet_vars, logs
from mdmscep_common.ca_keys import challenge_context
from mdmscep_common.crypto import SecretBox
from mdmscep_common.health import HealthChecks
from profile_processor.delivery import Reconciler
from scep_proxy.profile_authority_client import _reason_for_host
from tests.conftest import ADMIN_TOKEN, SERVER_PRIVATE_KEY
from tests.support.identity_pki import IdentityCa
from tests.support.owner_doubles import row_owners
from tests.support.proxy_world import ProxyWorld
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings

CHALLENGE = "Zq9-challenge&<only-the-CA-knows>"
NEW_CHALLENGE = "Wx7-another-challenge-for-the-CA"
GOOD_URL = "http://ca.test/scep"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Prober:
    def __init__(self):
        self.der = IdentityCa("probe CA").certificate.public_bytes(Encoding.DER)

    def probe(self, url):
        if url == GOOD_URL:
            return ProbeOutcome(True, "", [self.der])
        return ProbeOutcome(False, f"could not connect to {url}", [])


@pytest.fixture
def admin(db):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN})
    services = build_services(settings, db, Prober(), RecordingPublisher(), **row_owners(db))
    return create_app(services, HealthChecks({})).test_client()


@pytest.fixture
def captured():
    """Every log line of this process, as the services write them (JSON, secrets masked)."""
    stream = io.StringIO()
    handler = logs.json_handler("test")
    handler.setStream(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_challenge_never_comes_back_from_the_admin_api(admin, captured):
    api = "/api/v1/fleet"
    answers = [admin.post(f"{api}/certificate_authorities", headers=AUTH, json={
        "custom_scep_proxy": {"name": "Secret_CA", "url": GOOD_URL, "challenge": CHALLENGE}})]
    ca_id = answers[0].json["id"]
    answers += [
        admin.get(f"{api}/certificate_authorities", headers=AUTH),
        admin.get(f"{api}/certificate_authorities/{ca_id}", headers=AUTH),
        # A failed edit: the probe's reason is shown, the challenge is not.
        admin.patch(f"{api}/certificate_authorities/{ca_id}", headers=AUTH, json={
            "custom_scep_proxy": {"url": "http://unreachable.test/scep",
                                  "challenge": NEW_CHALLENGE}}),
        admin.patch(f"{api}/certificate_authorities/{ca_id}", headers=AUTH, json={
            "custom_scep_proxy": {"challenge": NEW_CHALLENGE}}),
        # Duplicate name, bad name: errors about the request, not its secret.
        admin.post(f"{api}/certificate_authorities", headers=AUTH, json={
            "custom_scep_proxy": {"name": "Secret_CA", "url": GOOD_URL, "challenge": CHALLENGE}}),
        admin.post(f"{api}/certificate_authorities", headers=AUTH, json={
            "custom_scep_proxy": {"name": "bad name!", "url": GOOD_URL, "challenge": CHALLENGE}}),
        admin.get(f"{api}/activities", headers=AUTH),
    ]
    assert answers[2].json["challenge"] == "********"
    assert [a.status_code for a in answers][3] == 400
    for answer in answers:
        text = answer.get_data(as_text=True)
        assert CHALLENGE not in text and NEW_CHALLENGE not in text, (answer.status_code, text)
    # The process that saw them masks both in any later log line.
    logging.getLogger("test.secrets").warning("oops %s / %s", CHALLENGE, NEW_CHALLENGE,
                                              extra={"detail": f"x{CHALLENGE}y"})
    out = captured.getvalue()
    assert CHALLENGE not in out and NEW_CHALLENGE not in out and logs.REDACTED in out


def test_configuration_secrets_are_masked_in_log_lines(captured):
    settings = load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY,
                              "ADMIN_API_TOKEN": ADMIN_TOKEN, "ENROLL_SECRET": "enr0ll-s3cret",
                              "IDENTITY_SCEP_CHALLENGE": "id3ntity-ch4llenge",
                              "IDENTITY_SCEP_URL": "http://id.test/scep"})
    for secret in settings.secret_values():
        logs.register_secret(secret)
    log = logging.getLogger("test.secrets")
    values = settings.secret_values()
    assert len(values) == 4
    log.info("starting with %s", values, extra={"env": " ".join(values), "password": "p4ss"})
    try:
        raise RuntimeError(f"connect failed: {values}")
    except RuntimeError:
        log.exception("boom")
    out = captured.getvalue()
    for secret in (*values, "p4ss"):
        assert secret not in out
    assert all(json.loads(line) for line in out.splitlines())
    assert repr(settings).count("s3cret") == 0 and SERVER_PRIVATE_KEY not in repr(settings)


def test_a_challenge_the_processor_decrypts_is_masked_in_its_log_lines(captured):
    # The processor learns challenges only from the database (never through admin-config's API).
    # Unique per run: other tests in this worker register their own challenges as secrets.
    challenge = f"Pr0cessor-only&{uuid.uuid4().hex}"
    box = SecretBox(SERVER_PRIVATE_KEY)
    row = {"name": "Decrypted_CA",
           "challenge_encrypted": box.encrypt(challenge, challenge_context("Decrypted_CA"))}
    assert logs.redact(challenge) == challenge  # not known to this process before
    assert Reconciler._challenge(types.SimpleNamespace(_secrets=box), row) == challenge
    logging.getLogger("test.secrets").warning("rendered %s", fleet_vars.xml_escape(challenge),
                                              extra={"detail": challenge})
    out = captured.getvalue()
    assert challenge not in out and fleet_vars.xml_escape(challenge) not in out


@pytest.mark.parametrize("reason", ["one-time code {code} already used", "{code}",
                                    "unknown code {code}\n{code}\tinjected"])
def test_the_proxy_never_repeats_a_code_the_processor_quoted(reason):
    code = "S3cretC0de-abcdefghijklmnop"
    text = _reason_for_host(reason.format(code=code), code)
    assert code not in text and "\n" not in text and len(text) <= 200


def test_proxy_refusals_never_echo_the_code():
    world = ProxyWorld()
    try:
        host, profile, code = world.grant(status="verified")
        for operation in ("GetCACaps", "PKIOperation", "Nope"):
            answer = world.client.get(world.path(host, profile, code),
                                      query_string={"operation": operation, "message": "x"})
            assert answer.status_code >= 400 and code not in answer.get_data(as_text=True)
        malformed = world.client.get("/mdm/scep/proxy/" + f"{host},{profile},{code}",
                                     query_string={"operation": "GetCACaps"})
        assert malformed.status_code == 400 and code not in malformed.get_data(as_text=True)
    finally:
        world.close()
