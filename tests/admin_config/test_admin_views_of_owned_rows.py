"""What the admin API shows of rows other services own (hosts, deliveries, host certificates, CA
request records), now that admin-config asks their owners: the answers are those it gave when it
read the tables itself, field for field, with the same filters and totals. The owners answer from
this test's rows (their servicers in-process: tests/support/owner_doubles.py); the hosts list
narrowed by a delivery comes in host UUID order (docs/api.md)."""

from __future__ import annotations

import pytest

from tests.support.processor_read_models import copy_owned_rows_to_processor

HOSTS = "/api/v1/fleet/hosts"
PROFILES = "/api/v1/fleet/configuration_profiles"


def _host(conn, uuid, serial, minutes_ago, **extra):
    conn.execute(
        "INSERT INTO hosts (uuid, serial_number, enrolled, created_at, last_seen_at, device_name, "
        "model, os_version, enrolled_at) VALUES (%s, %s, %s, now() - make_interval(mins => %s), "
        "%s, %s, %s, %s, %s)",
        (uuid, serial, extra.get("enrolled", True), minutes_ago, extra.get("last_seen_at"),
         extra.get("device_name", ""), extra.get("model", ""), extra.get("os_version", ""),
         extra.get("enrolled_at")))


def _profile(conn, uuid, name):
    conn.execute("INSERT INTO profiles (uuid, name, identifier, payload_uuid, raw, checksum) "
                 "VALUES (%s, %s, %s, %s, '\\x00', '\\x00')", (uuid, name, f"com.test.{uuid}", uuid))


def _delivery(conn, host, profile, status, operation="install", name="", minutes_ago=0,
              detail=""):
    conn.execute(
        "INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, profile_name, "
        "operation_type, status, detail, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, "
        "%s, now() - make_interval(mins => %s), '2026-01-31T12:00:00Z')",
        (host, profile, f"com.test.{profile}", name, operation, status, detail, minutes_ago))


@pytest.fixture
def fleet(db_conn):
    """H-B enrolled first, then H-A, then H-C. P-1 was renamed since it was delivered; P-2 was
    deleted and is being removed from H-A."""
    _host(db_conn, "H-B", "C02BBB", 30, last_seen_at="2026-01-31T11:00:00Z")
    _host(db_conn, "H-A", "C02AAA", 20, device_name="Anna's Mac", model="Mac14,2",
          os_version="14.5", enrolled_at="2026-01-30T08:00:00Z")
    _host(db_conn, "H-C", "XYZ123", 10, enrolled=False)
    _profile(db_conn, "P-1", "Wi-Fi (new)")
    _delivery(db_conn, "H-B", "P-1", "failed", name="Wi-Fi", detail="The disk is full")
    _delivery(db_conn, "H-A", "P-1", "verified", name="Wi-Fi", minutes_ago=5)
    _delivery(db_conn, "H-A", "P-2", "pending", operation="remove", name="VPN", minutes_ago=1)


def _uuids(admin, query):
    body = admin.get(f"{HOSTS}?{query}").json
    return [h["uuid"] for h in body["hosts"]], body["meta"]["total"]


def test_the_host_list_keeps_its_fields_order_and_filters(admin, fleet):
    body = admin.get(HOSTS).json
    assert body["hosts"][0] == {"uuid": "H-B", "serial_number": "C02BBB", "enrolled": True,
                                "last_seen_at": "2026-01-31T11:00:00Z", "team_id": None}
    assert _uuids(admin, "") == (["H-B", "H-A", "H-C"], 3)  # enrollment order
    assert _uuids(admin, "query=c02") == (["H-B", "H-A"], 2)
    assert _uuids(admin, "query=%25") == ([], 0)  # a literal character, no wildcard
    assert _uuids(admin, "per_page=1&page=1") == (["H-A"], 3)
    # Narrowed by a delivery: host UUID order.
    assert _uuids(admin, "profile_uuid=P-1") == (["H-A", "H-B"], 2)
    assert _uuids(admin, "status=failed") == (["H-B"], 1)
    assert _uuids(admin, "status=pending") == (["H-A"], 1)  # a removal's status counts too
    assert _uuids(admin, "status=pending&profile_uuid=P-1") == ([], 0)
    assert _uuids(admin, "status=verified&profile_uuid=P-1") == (["H-A"], 1)
    assert _uuids(admin, "profile_uuid=P-1&per_page=1&page=1") == (["H-B"], 2)
    assert _uuids(admin, "profile_uuid=P-1&query=bbb") == (["H-B"], 1)
    assert _uuids(admin, "profile_uuid=P-1&query=xyz") == ([], 0)
    assert _uuids(admin, "profile_uuid=nope") == ([], 0)
    assert admin.get(f"{HOSTS}?status=lost").status_code == 400
    assert admin.get(f"{HOSTS}?query={'x' * 101}").status_code == 400


def test_a_query_matching_more_hosts_than_one_request_names_still_counts_them_all(admin, db_conn,
                                                                                  fleet):
    # 1,200 hosts match the query (more than the 1,000 one request may name); 300 of them failed.
    db_conn.execute("INSERT INTO hosts (uuid, serial_number, enrolled) SELECT format('BULK-%s', "
                    "lpad(n::text, 4, '0')), format('C02BULK%s', n), true "
                    "FROM generate_series(1, 1200) n")
    db_conn.execute("INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, status) "
                    "SELECT format('BULK-%s', lpad(n::text, 4, '0')), 'P-1', 'com.test.P-1', "
                    "CASE WHEN n % 4 = 0 THEN 'failed' ELSE 'verified' END "
                    "FROM generate_series(1, 1200) n")
    failed = [f"BULK-{n:04d}" for n in range(4, 1201, 4)]
    assert _uuids(admin, "query=bulk&status=failed&per_page=100&page=2") == (failed[200:], 300)
    assert _uuids(admin, "query=c02&status=failed&per_page=1000") == (failed + ["H-B"], 301)
    assert _uuids(admin, "query=c02&profile_uuid=P-1&per_page=3") == (
        ["BULK-0001", "BULK-0002", "BULK-0003"], 1202)


def test_host_detail_counts_every_delivery(admin, fleet):
    assert admin.get(f"{HOSTS}/H-A").json == {
        "uuid": "H-A", "serial_number": "C02AAA", "enrolled": True, "last_seen_at": None,
        "team_id": None, "device_name": "Anna's Mac", "model": "Mac14,2", "os_version": "14.5",
        "product_name": "", "platform": "", "facts_updated_at": None,
        "enrolled_at": "2026-01-30T08:00:00Z", "push_token_invalid": False,
        "profiles": {"pending": 1, "verifying": 0, "verified": 1, "failed": 0}}
    assert admin.get(f"{HOSTS}/nope").status_code == 404
    assert admin.get(f"{HOSTS}/{'H' * 65}").status_code == 404


def test_a_hosts_deliveries_show_their_profiles_current_names(admin, fleet):
    assert admin.get(f"{HOSTS}/H-A/configuration_profiles").json == {"profiles": [
        {"profile_uuid": "P-1", "name": "Wi-Fi (new)", "identifier": "com.test.P-1",
         "operation_type": "install", "status": "verified", "detail": ""},
        {"profile_uuid": "P-2", "name": "VPN", "identifier": "com.test.P-2",
         "operation_type": "remove", "status": "pending", "detail": ""}]}
    assert admin.get(f"{HOSTS}/H-C/configuration_profiles").json == {"profiles": []}
    assert admin.get(f"{HOSTS}/nope/configuration_profiles").status_code == 404


def test_a_profiles_summary_hosts_and_retry(admin, db_conn, fleet):
    _delivery(db_conn, "GONE", "P-1", "failed")  # a host mdm-endpoint forgot a moment ago
    assert admin.get(f"{PROFILES}/P-1/summary").json == {
        "profile_uuid": "P-1", "pending": 0, "verifying": 0, "verified": 1, "failed": 2, "total": 3}
    body = admin.get(f"{PROFILES}/P-1/hosts").json
    assert body["meta"]["total"] == 3
    assert [(h["host_uuid"], h["serial_number"], h["status"]) for h in body["hosts"]] == [
        ("GONE", "", "failed"), ("H-A", "C02AAA", "verified"), ("H-B", "C02BBB", "failed")]
    assert body["hosts"][2] == {"host_uuid": "H-B", "serial_number": "C02BBB",
                                "operation_type": "install", "status": "failed",
                                "detail": "The disk is full", "updated_at": "2026-01-31T12:00:00Z"}
    failed = admin.get(f"{PROFILES}/P-1/hosts?status=failed&per_page=1&page=1").json
    assert [h["host_uuid"] for h in failed["hosts"]] == ["H-B"] and failed["meta"]["total"] == 2
    assert admin.get(f"{PROFILES}/P-2/summary").status_code == 404  # deleted

    retried = admin.post(f"{PROFILES}/P-1/retry_failed")
    assert (retried.status_code, retried.json) == (202, {"hosts": 2})
    activity = db_conn.execute("SELECT details FROM activities WHERE type = "
                               "'retried_configuration_profile'").fetchone()
    assert activity["details"] == {"profile_name": "Wi-Fi (new)", "hosts": 2}


def test_resend_needs_an_install_delivery(admin, db_conn, fleet):
    _profile(db_conn, "P-3", "Mail")
    resend = "/api/v1/fleet/hosts/{}/configuration_profiles/{}/resend"
    assert admin.post(resend.format("H-A", "P-1")).status_code == 202
    assert admin.post(resend.format("H-C", "P-1")).status_code == 409  # no delivery
    assert admin.post(resend.format("H-A", "P-3")).status_code == 409
    _delivery(db_conn, "H-C", "P-3", "pending", operation="remove")
    assert admin.post(resend.format("H-C", "P-3")).status_code == 409  # being removed
    assert admin.post(resend.format("nope", "P-1")).status_code == 404
    assert admin.post(resend.format("H-A", "P-2")).status_code == 404  # the profile is gone


def test_certificates_carry_their_profiles_names(admin, db_conn, fleet):
    for host, profile, serial, days in (("H-A", "P-1", "0A", 3), ("H-B", "P-2", "0B", 2),
                                        ("H-A", "P-1", "0C", 40)):
        db_conn.execute(
            "INSERT INTO host_certificates (host_uuid, profile_uuid, sha256, serial, subject, "
            "issuer, not_before, not_after) VALUES (%s, %s, %s, %s, 'CN=h', 'CN=ca', "
            "'2026-01-01T00:00:00Z', now() + make_interval(days => %s))",
            (host, profile, serial.encode(), serial, days))
    held = admin.get(f"{HOSTS}/H-A/certificates").json["certificates"]
    assert [(c["serial"], c["profile_name"]) for c in held] == [("0A", "Wi-Fi (new)"),
                                                                ("0C", "Wi-Fi (new)")]
    assert set(held[0]) == {"host_uuid", "profile_uuid", "profile_name", "serial", "subject",
                            "issuer", "not_before", "not_after"}
    assert held[0]["not_before"] == "2026-01-01T00:00:00Z"
    soon = admin.get("/api/v1/fleet/certificates?expiring_within_days=10").json
    assert [(c["serial"], c["profile_name"]) for c in soon["certificates"]] == [
        ("0B", ""), ("0A", "Wi-Fi (new)")]  # P-2 is gone: no name
    assert soon["meta"]["total"] == 2
    every = admin.get("/api/v1/fleet/certificates?per_page=1&page=2").json
    assert [c["serial"] for c in every["certificates"]] == ["0C"] and every["meta"]["total"] == 3
    assert admin.get(f"{HOSTS}/nope/certificates").status_code == 404


def test_ca_stats_come_from_the_proxys_records_and_the_processors_pacing(admin, db_conn, fleet):
    ca_id = db_conn.execute(
        "INSERT INTO certificate_authorities (name, url, challenge_encrypted, "
        "max_concurrent_requests) VALUES ('Stats_CA', 'http://ca.test/scep', '\\x00', 2) "
        "RETURNING id").fetchone()["id"]
    db_conn.execute("INSERT INTO profile_certificate_authorities (profile_uuid, ca_id) "
                    "VALUES ('P-1', %s)", (ca_id,))
    db_conn.execute("INSERT INTO ca_requests (ca_name, outcome, latency_ms, created_at) VALUES "
                    "('Stats_CA', 'issued', 100, now()), ('Stats_CA', 'issued', 200, now()), "
                    "('Stats_CA', 'timeout', 600, now()), ('Stats_CA', 'busy', 1, now()), "
                    "('Stats_CA', 'issued', 50, now() - interval '2 hours'), "
                    "('Other_CA', 'issued', 10, now())")
    _host(db_conn, "H-D", "C02DDD", 1)
    _delivery(db_conn, "H-D", "P-1", "pending")
    db_conn.execute("UPDATE host_profiles SET paced_until = now() + interval '1 minute' "
                    "WHERE host_uuid = 'H-D'")
    copy_owned_rows_to_processor(db_conn)  # the processor paces by its copy of the CA
    assert admin.get(f"/api/v1/fleet/certificate_authorities/{ca_id}/stats").json == {
        "id": ca_id, "name": "Stats_CA", "window_seconds": 3600, "issued": 2, "failed": 1,
        "refused_busy": 1, "in_flight": 0, "waiting": 1, "average_latency_ms": 300.0,
        "max_concurrent_requests": 2,
        # Never changed by an answer: the start rate, 5 per allowed concurrent request.
        "issuance_rate": {"per_second": 10.0, "ceiling": None, "reason": "start",
                          "changed_at": None}}
