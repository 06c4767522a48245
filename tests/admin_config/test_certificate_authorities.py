"""Admin API: certificate authorities against real PostgreSQL and a real scepserver."""

from __future__ import annotations

import http.server
import logging
import socket
import time

import pytest
from cryptography import x509

from mdmscep_common.config_events import read_ca_state
from tests.support.ports import free_port
from tests.support.service_fixtures import AdminClient, create_ca
from tests.support.serving import serve_in_thread

CAS = "/api/v1/fleet/certificate_authorities"
CHALLENGE = "s3cret&<chall>\"enge'"  # XML and JSON specials must survive


def _ca_row(db_conn, name):
    return db_conn.execute("SELECT * FROM certificate_authorities WHERE name = %s",
                           (name,)).fetchone()


def _activities(db_conn, type_):
    return db_conn.execute("SELECT actor, details FROM activities WHERE type = %s ORDER BY id",
                           (type_,)).fetchall()


def test_create_with_live_scepserver(admin, custom_ca, db_conn, publisher):
    response = create_ca(admin, "Test_SCEP", custom_ca.url, CHALLENGE)
    assert response.status_code == 200, response.json
    body = response.json
    assert set(body) == {"id", "name", "type"}
    assert body["name"] == "Test_SCEP" and body["type"] == "custom_scep_proxy"

    row = _ca_row(db_conn, "Test_SCEP")
    assert row["url"] == custom_ca.url
    # The CA certificate that GetCACert returned is kept (for expiry checks later).
    stored = x509.load_pem_x509_certificates(row["ca_certificates_pem"].encode())
    assert stored == [x509.load_pem_x509_certificate(custom_ca.ca_pem)]
    # Encrypted at rest: neither the challenge nor a recognisable piece of it is in the column.
    raw = bytes(row["challenge_encrypted"])
    assert CHALLENGE.encode() not in raw and b"s3cret" not in raw
    assert _activities(db_conn, "added_custom_scep_proxy") == [
        {"actor": "admin", "details": {"name": "Test_SCEP"}}]
    [(key, event)] = publisher.messages
    state = event.pop("certificate_authority")
    assert (key, event) == ("config.changed", {
        "kind": "certificate_authority", "action": "added", "id": body["id"],
        "name": "Test_SCEP", "resend": False})
    # The CA as committed, for the processor's copy: its challenge only as stored, sealed.
    copy = read_ca_state(state)
    assert (copy.id, copy.name, copy.url, copy.challenge_encrypted, copy.ca_certificates_pem,
            copy.max_concurrent_requests, copy.max_issuance_per_second, copy.updated_at) == (
        row["id"], "Test_SCEP", custom_ca.url, raw, row["ca_certificates_pem"], 4, None,
        row["updated_at"])
    assert CHALLENGE not in str(state)


def test_get_and_list_never_show_the_challenge(admin, custom_ca):
    ca_id = create_ca(admin, "Masked", custom_ca.url, CHALLENGE).json["id"]
    detail = admin.get(f"{CAS}/{ca_id}")
    assert detail.status_code == 200
    assert detail.json == {"id": ca_id, "name": "Masked", "type": "custom_scep_proxy",
                           "url": custom_ca.url, "challenge": "********",
                           "max_concurrent_requests": 4, "max_issuance_per_second": None}
    listing = admin.get(CAS)
    assert {"id": ca_id, "name": "Masked", "type": "custom_scep_proxy"} in \
        listing.json["certificate_authorities"]
    for response in (detail, listing):
        assert "s3cret" not in response.get_data(as_text=True)


@pytest.mark.parametrize("name, reason", [
    ("", "cannot be empty"),
    ("   ", "cannot be empty"),
    ("has space", "Only letters, numbers and underscores"),
    ("dash-name", "Only letters, numbers and underscores"),
    ("émoji", "Only letters, numbers and underscores"),
    ("x" * 256, "longer than 255"),
    (None, "cannot be empty"),
    (42, "cannot be empty"),
])
def test_invalid_name_is_422(admin, custom_ca, db_conn, name, reason):
    response = create_ca(admin, name, custom_ca.url)
    assert response.status_code == 422
    assert reason in response.json["message"]
    assert response.json["errors"][0]["name"] == "name"
    assert db_conn.execute("SELECT count(*) AS n FROM certificate_authorities").fetchone()["n"] == 0


def test_name_of_255_characters_is_accepted(admin, custom_ca):
    assert create_ca(admin, "N" * 255, custom_ca.url).status_code == 200


@pytest.mark.parametrize("url", ["", "not a url", "ftp://127.0.0.1/scep", "http://",
                                 "127.0.0.1:2016/scep", "http://host:notaport/scep", None])
def test_invalid_url_is_422(admin, url):
    response = create_ca(admin, "BadUrl", url)
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["name"] == "url"


@pytest.mark.parametrize("challenge", ["", "********", None])
def test_empty_or_masked_challenge_is_400(admin, custom_ca, challenge):
    response = create_ca(admin, "NoChallenge", custom_ca.url, challenge)
    assert response.status_code == 400
    assert response.json["message"] == "Custom SCEP Proxy challenge cannot be empty"


@pytest.mark.parametrize("challenge", ["a\x01b", "\x00", "lone \ud800", "x\uffff"])
def test_a_challenge_no_profile_can_carry_is_400(admin, custom_ca, db_conn, challenge):
    response = create_ca(admin, "Unprintable", custom_ca.url, challenge)
    assert response.status_code == 400, response.json
    assert "cannot carry" in response.json["message"]
    assert challenge not in response.get_data(as_text=True)
    assert db_conn.execute("SELECT count(*) AS n FROM certificate_authorities").fetchone()["n"] == 0
    ca_id = create_ca(admin, "Printable", custom_ca.url, "tab\tCR\r é 🎉").json["id"]
    refused = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {"challenge": challenge}})
    assert refused.status_code == 400 and "cannot carry" in refused.json["message"]


def test_duplicate_name_is_409(admin, custom_ca, db_conn):
    assert create_ca(admin, "Twice", custom_ca.url).status_code == 200
    response = create_ca(admin, "Twice", custom_ca.url)
    assert response.status_code == 409
    assert "Twice" in response.json["message"]
    assert len(_activities(db_conn, "added_custom_scep_proxy")) == 1


def test_unreachable_url_is_400_quickly(admin, db_conn):
    closed_port = free_port()
    started = time.monotonic()
    response = create_ca(admin, "Down", f"http://127.0.0.1:{closed_port}/scep")
    assert time.monotonic() - started < 5
    assert response.status_code == 400
    assert response.json["message"] == "Invalid SCEP URL. Please correct and try again."
    assert "could not connect" in response.json["errors"][0]["reason"]
    assert _ca_row(db_conn, "Down") is None


class _NotScep(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"<html>hello, this is not a SCEP server</html>"
        status = 404 if "GetCACert" in self.path and "/missing" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def not_scep_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotScep)
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path, reason", [("/scep", "holds no certificate"),
                                          ("/missing", "HTTP 404")])
def test_non_scep_url_is_400(admin, not_scep_server, path, reason):
    response = create_ca(admin, "Web", not_scep_server + path)
    assert response.status_code == 400
    assert response.json["message"] == "Invalid SCEP URL. Please correct and try again."
    assert reason in response.json["errors"][0]["reason"]


def test_silent_url_is_refused_within_the_timeout(admin):
    # Accepts TCP connections and never answers: the probe's timeout (2 s in tests) decides.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        response = create_ca(admin, "Silent", f"http://127.0.0.1:{silent.getsockname()[1]}/scep")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert response.status_code == 400
    assert "did not answer" in response.json["errors"][0]["reason"]
    assert elapsed < 4


def test_patch_url_without_challenge_is_422(admin, custom_ca, db_conn):
    ca_id = create_ca(admin, "Patchy", custom_ca.url).json["id"]
    before = _ca_row(db_conn, "Patchy")
    response = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {
        "url": custom_ca.url.replace("/scep", "/scep?x=1")}})
    assert response.status_code == 422
    assert response.json["errors"][0]["name"] == "challenge"
    assert _ca_row(db_conn, "Patchy") == before


def test_patch_challenge_reencrypts_records_and_resends(admin, custom_ca, db_conn, publisher):
    ca_id = create_ca(admin, "Rotate", custom_ca.url, "old-challenge").json["id"]
    before = bytes(_ca_row(db_conn, "Rotate")["challenge_encrypted"])
    response = admin.patch(f"{CAS}/{ca_id}",
                           json={"custom_scep_proxy": {"challenge": "new-challenge"}})
    assert response.status_code == 200
    assert response.json["challenge"] == "********"
    assert bytes(_ca_row(db_conn, "Rotate")["challenge_encrypted"]) != before
    assert _activities(db_conn, "edited_custom_scep_proxy") == [
        {"actor": "admin", "details": {"name": "Rotate"}}]
    assert publisher.messages[-1][1]["action"] == "edited"
    assert publisher.messages[-1][1]["resend"] is True


def test_patch_url_with_challenge_probes_the_new_url(admin, custom_ca, db_conn):
    ca_id = create_ca(admin, "Moving", custom_ca.url).json["id"]
    dead = f"http://127.0.0.1:{free_port()}/scep"
    refused = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {
        "url": dead, "challenge": "c"}})
    assert refused.status_code == 400
    assert _ca_row(db_conn, "Moving")["url"] == custom_ca.url
    new_url = custom_ca.url + "?tenant=a"
    moved = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {
        "url": new_url, "challenge": "c"}})
    assert moved.status_code == 200 and moved.json["url"] == new_url


def test_patch_cannot_rename(admin, custom_ca):
    ca_id = create_ca(admin, "Fixed", custom_ca.url).json["id"]
    response = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {"name": "Other"}})
    assert response.status_code == 422


def test_patch_with_masked_challenge_is_400(admin, custom_ca):
    ca_id = create_ca(admin, "MaskedPatch", custom_ca.url).json["id"]
    response = admin.patch(f"{CAS}/{ca_id}",
                           json={"custom_scep_proxy": {"challenge": "********"}})
    assert response.status_code == 400


def test_delete_records_activity(admin, custom_ca, db_conn, publisher):
    ca_id = create_ca(admin, "Gone", custom_ca.url).json["id"]
    response = admin.delete(f"{CAS}/{ca_id}")
    assert response.status_code == 204
    assert admin.get(f"{CAS}/{ca_id}").status_code == 404
    assert admin.delete(f"{CAS}/{ca_id}").status_code == 404
    assert _activities(db_conn, "deleted_custom_scep_proxy") == [
        {"actor": "admin", "details": {"name": "Gone"}}]
    assert publisher.messages[-1] == ("config.changed", {
        "kind": "certificate_authority", "action": "deleted", "id": ca_id, "name": "Gone",
        "resend": False, "certificate_authority": None})
    feed = admin.get("/api/v1/fleet/activities").json["activities"]
    assert [a["type"] for a in feed[:2]] == ["deleted_custom_scep_proxy", "added_custom_scep_proxy"]
    assert feed[0]["created_at"].endswith("Z")


@pytest.mark.parametrize("path", [f"{CAS}/999999", f"{CAS}/abc"])
def test_unknown_ids_are_404(admin, path):
    for method in (admin.get, admin.delete):
        response = method(path)
        assert response.status_code == 404
        assert "message" in response.json


@pytest.mark.parametrize("body", [None, "[]", '"text"', "{", '{"custom_scep_proxy": []}',
                                  '{"other": {}}'])
def test_malformed_bodies_are_400(admin, body):
    response = admin.post(CAS, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["message"]


def test_oversized_body_is_413(admin):
    response = admin.post(CAS, data=b"{" + b" " * (3 << 20) + b"}",
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-token", "Basic abc",
                                    "bearer  "])
def test_requests_without_a_valid_token_are_401(admin_app, header, db_conn):
    client = admin_app.test_client()
    headers = {"Authorization": header} if header else {}
    for method, path in (("get", CAS), ("post", CAS), ("get", f"{CAS}/1"),
                         ("patch", f"{CAS}/1"), ("delete", f"{CAS}/1"),
                         ("get", "/api/v1/fleet/activities"),
                         ("get", "/api/v1/fleet/openapi.json")):
        response = getattr(client, method)(path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.json["message"]


def test_cli_tokens_authenticate_as_their_name(admin_app, custom_ca, db, db_conn):
    from admin_config.auth import new_token, token_hash
    from admin_config.store import ApiTokenStore

    token = new_token()
    ApiTokenStore().create(db_conn, "alice", token_hash(token), "admin")
    alice = AdminClient(admin_app.test_client(), token)
    assert create_ca(alice, "ByAlice", custom_ca.url).status_code == 200
    assert _activities(db_conn, "added_custom_scep_proxy")[-1]["actor"] == "alice"
    # The database holds only the hash.
    assert token.encode() not in bytes(db_conn.execute(
        "SELECT token_sha256 FROM api_tokens WHERE name = 'alice'").fetchone()["token_sha256"])
    ApiTokenStore().revoke(db_conn, "alice")
    assert alice.get(CAS).status_code == 401


def test_challenge_is_in_no_log_line(admin, custom_ca, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    secret = "log-canary-Zq81x"
    create_ca(admin, "Logged", custom_ca.url, secret)
    create_ca(admin, "Logged", custom_ca.url, secret)  # 409 path
    create_ca(admin, "Bad Name", custom_ca.url, secret)  # 422 path
    create_ca(admin, "DownLog", f"http://127.0.0.1:{free_port()}/x", secret)  # probe failure
    captured = capsys.readouterr()
    assert secret not in caplog.text
    assert secret not in captured.out + captured.err


def test_limits_are_validated_and_do_not_resend(admin, custom_ca, db_conn, publisher):
    bad = admin.post(CAS, json={"custom_scep_proxy": {"name": "Limited", "url": custom_ca.url,
                                                      "challenge": "c", "max_concurrent_requests": 0}})
    assert bad.status_code == 422 and bad.json["errors"][0]["name"] == "max_concurrent_requests"
    created = admin.post(CAS, json={"custom_scep_proxy": {
        "name": "Limited", "url": custom_ca.url, "challenge": "c", "max_concurrent_requests": 2,
        "max_issuance_per_second": 1.5}})
    assert created.status_code == 200
    ca_id = created.json["id"]
    before = _ca_row(db_conn, "Limited")["updated_at"]
    edited = admin.patch(f"{CAS}/{ca_id}", json={"custom_scep_proxy": {"max_concurrent_requests": 1}})
    assert edited.status_code == 200
    assert (edited.json["max_concurrent_requests"], edited.json["max_issuance_per_second"]) == (1, 1.5)
    # Limits are not a change of the CA's identity: no profile is re-sent. The processor's copy
    # learns them (it paces by them and hands the proxy its limit).
    assert _ca_row(db_conn, "Limited")["updated_at"] == before
    [(_, edit)] = [m for m in publisher.messages if m[1]["action"] == "edited"]
    assert edit["resend"] is False
    assert edit["certificate_authority"]["max_concurrent_requests"] == 1
    assert edit["certificate_authority"]["updated_at"] == before.isoformat()
    for value in ("x", -1, 10_001, True):
        response = admin.patch(f"{CAS}/{ca_id}",
                               json={"custom_scep_proxy": {"max_issuance_per_second": value}})
        assert response.status_code == 422
    stats = admin.get(f"{CAS}/{ca_id}/stats").json
    assert stats["issued"] == 0 and stats["in_flight"] == 0 and stats["max_concurrent_requests"] == 1
