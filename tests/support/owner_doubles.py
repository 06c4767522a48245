"""In-process stand-ins for the services admin-config asks about what it shows but does not own:
mdm-endpoint's HostRegistry, the profile-processor's DeliveryDirectory and scep-proxy's
ScepGateway.CaRequestStats. They answer from the owners' tables over the test's own database
connection (so rows a test inserts in its rolled-back transaction are seen), with the semantics
and limits of proto/mdmscep/v1: a request the real owner would refuse (INVALID_ARGUMENT) fails
the test here. They have the methods of admin-config's clients (host_registry_client.py,
delivery_directory_client.py, scep_gateway.py) and return the same types.

Tests of the gRPC clients themselves and of the owners' servers start real servers; these
doubles serve the admin API tests built with build_services(...)."""

from __future__ import annotations

from typing import Any

from admin_config.delivery_directory_client import Delivery, HostCertificate
from admin_config.host_registry_client import RegisteredHost
from admin_config.scep_gateway import CaRequestStats
from mdmscep_common.ca_keys import slot_lock_class

MAX_HOST_UUIDS = 1000
MAX_PER_PAGE = 1000
MAX_QUERY_CHARS = 100
MAX_WINDOW_SECONDS = 86_400
STATUSES = ("", "pending", "verifying", "verified", "failed")  # "": any


class InvalidArgument(AssertionError):
    """What the real owner answers INVALID_ARGUMENT to: admin-config must not ask it."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvalidArgument(what)


def _check_page(page: int, per_page: int) -> None:
    _check(isinstance(page, int) and 0 <= page < 2**31, f"page {page!r}")
    _check(isinstance(per_page, int) and 1 <= per_page <= MAX_PER_PAGE, f"per_page {per_page!r}")


def _check_status(status: str) -> None:
    _check(status in STATUSES, f"status {status!r}")


def _check_host_uuids(host_uuids: list[str]) -> None:
    _check(len(host_uuids) <= MAX_HOST_UUIDS, f"{len(host_uuids)} host_uuids")


_HOST = ("SELECT h.uuid, h.serial_number, h.enrolled, h.last_seen_at, h.device_name, h.model, "
         "h.os_version, h.enrolled_at, h.push_token_invalid_at IS NOT NULL AS push_token_invalid "
         "FROM hosts h")


class RowHostRegistry:
    """HostRegistry over the hosts table (DeleteHost deletes the row, publishing nothing)."""

    def __init__(self, db):
        self._db = db

    def delete_host(self, host_uuid: str) -> bool:
        _check(0 < len(host_uuid) <= 64, "host_uuid")
        with self._db.transaction() as conn:
            return conn.execute("DELETE FROM hosts WHERE uuid = %s RETURNING uuid",
                                (host_uuid,)).fetchone() is not None

    def list_hosts(self, page: int, per_page: int, query: str = "",
                   host_uuids: list[str] | None = None) -> tuple[list[RegisteredHost], int]:
        _check(len(query) <= MAX_QUERY_CHARS, "query")
        _check_host_uuids(host_uuids or [])
        _check_page(page, per_page)
        params = {"query": query or None, "hosts": host_uuids or None, "limit": per_page,
                  "offset": page * per_page}
        where = """WHERE (%(query)s::text IS NULL
                          OR strpos(lower(h.serial_number), lower(%(query)s)) > 0
                          OR strpos(lower(h.uuid), lower(%(query)s)) > 0)
                     AND (%(hosts)s::text[] IS NULL OR h.uuid = ANY(%(hosts)s))"""
        with self._db.transaction() as conn:
            rows = conn.execute(f"{_HOST} {where} ORDER BY h.created_at, h.uuid "
                                "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM hosts h {where}", params).fetchone()["n"]
        return [RegisteredHost(**r) for r in rows], total

    def get_hosts(self, host_uuids: list[str]) -> dict[str, RegisteredHost]:
        found: dict[str, RegisteredHost] = {}
        for start in range(0, len(host_uuids), MAX_HOST_UUIDS):
            chunk = host_uuids[start:start + MAX_HOST_UUIDS]
            with self._db.transaction() as conn:
                rows = conn.execute(f"{_HOST} WHERE h.uuid = ANY(%s)", (chunk,)).fetchall()
            found.update((r["uuid"], RegisteredHost(**r)) for r in rows)
        return found


_DELIVERY = ("SELECT host_uuid, profile_uuid, profile_name, identifier, operation_type, status, "
             "detail, updated_at FROM host_profiles")
_CERTIFICATE = ("SELECT host_uuid, profile_uuid, serial, subject, issuer, not_before, not_after "
                "FROM host_certificates")
_EXPIRING = ("(%(within)s::float8 IS NULL "
             "OR not_after < now() + make_interval(secs => %(within)s::float8))")


def _by_status(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["status"]: r["n"] for r in rows}


class RowDeliveryDirectory:
    """DeliveryDirectory over host_profiles and host_certificates."""

    def __init__(self, db):
        self._db = db

    def count_deliveries(self, profile_uuid: str = "", host_uuid: str = "",
                         paced_ca_name: str = "") -> dict[str, int]:
        _check(sum(map(bool, (profile_uuid, host_uuid, paced_ca_name))) == 1,
               "exactly one of profile_uuid, host_uuid, paced_ca_name")
        with self._db.transaction() as conn:
            if profile_uuid:
                return _by_status(conn.execute(
                    "SELECT status, count(*) AS n FROM host_profiles WHERE profile_uuid = %s "
                    "AND operation_type = 'install' GROUP BY status", (profile_uuid,)).fetchall())
            if host_uuid:
                return _by_status(conn.execute(
                    "SELECT status, count(*) AS n FROM host_profiles WHERE host_uuid = %s "
                    "GROUP BY status", (host_uuid,)).fetchall())
            return _by_status(conn.execute(
                """SELECT hp.status, count(*) AS n FROM host_profiles hp
                   WHERE hp.operation_type = 'install' AND hp.status = 'pending'
                     AND hp.paced_until > now() AND hp.profile_uuid IN (
                         SELECT pc.profile_uuid FROM profile_certificate_authorities pc
                         JOIN certificate_authorities ca ON ca.id = pc.ca_id WHERE ca.name = %s)
                   GROUP BY hp.status""", (paced_ca_name,)).fetchall())

    def deliveries_of_profile(self, profile_uuid: str, status: str, page: int,
                              per_page: int) -> tuple[list[Delivery], int]:
        _check(bool(profile_uuid), "profile_uuid")
        _check_status(status)
        _check_page(page, per_page)
        params = {"p": profile_uuid, "s": status or None, "limit": per_page,
                  "offset": page * per_page}
        where = "WHERE profile_uuid = %(p)s AND (%(s)s::text IS NULL OR status = %(s)s)"
        with self._db.transaction() as conn:
            rows = conn.execute(f"{_DELIVERY} {where} ORDER BY host_uuid "
                                "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM host_profiles {where}",
                                 params).fetchone()["n"]
        return [Delivery(**r) for r in rows], total

    def deliveries_of_host(self, host_uuid: str, status: str = "") -> list[Delivery]:
        _check(bool(host_uuid), "host_uuid")
        _check_status(status)
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"{_DELIVERY} WHERE host_uuid = %(h)s AND (%(s)s::text IS NULL OR status = %(s)s) "
                "ORDER BY created_at, profile_uuid", {"h": host_uuid, "s": status or None}).fetchall()
        return [Delivery(**r) for r in rows]

    def hosts_with_deliveries(self, profile_uuid: str, status: str, page: int, per_page: int,
                              host_uuids: list[str] | None = None) -> tuple[list[str], int]:
        _check(bool(profile_uuid or status), "profile_uuid or status")
        _check_status(status)
        _check_host_uuids(host_uuids or [])
        _check_page(page, per_page)
        params = {"p": profile_uuid or None, "s": status or None, "hosts": host_uuids or None,
                  "limit": per_page, "offset": page * per_page}
        where = """WHERE (%(p)s::text IS NULL OR profile_uuid = %(p)s)
                     AND (%(s)s::text IS NULL OR status = %(s)s)
                     AND (%(hosts)s::text[] IS NULL OR host_uuid = ANY(%(hosts)s))"""
        with self._db.transaction() as conn:
            rows = conn.execute(f"SELECT DISTINCT host_uuid FROM host_profiles {where} "
                                "ORDER BY host_uuid LIMIT %(limit)s OFFSET %(offset)s",
                                params).fetchall()
            total = conn.execute(f"SELECT count(DISTINCT host_uuid) AS n FROM host_profiles "
                                 f"{where}", params).fetchone()["n"]
        return [r["host_uuid"] for r in rows], total

    def certificates_of_host(self, host_uuid: str) -> list[HostCertificate]:
        _check(bool(host_uuid), "host_uuid")
        with self._db.transaction() as conn:
            rows = conn.execute(f"{_CERTIFICATE} WHERE host_uuid = %s ORDER BY not_after, serial",
                                (host_uuid,)).fetchall()
        return [HostCertificate(**r) for r in rows]

    def certificates(self, expiring_within_days: float | None, page: int,
                     per_page: int) -> tuple[list[HostCertificate], int]:
        _check(expiring_within_days is None or 0 <= expiring_within_days <= 36_500,
               "expiring_within_days")
        _check_page(page, per_page)
        params = {"within": None if expiring_within_days is None else expiring_within_days * 86400,
                  "limit": per_page, "offset": page * per_page}
        with self._db.transaction() as conn:
            rows = conn.execute(f"{_CERTIFICATE} WHERE {_EXPIRING} "
                                "ORDER BY not_after, host_uuid, serial "
                                "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
            total = conn.execute(f"SELECT count(*) AS n FROM host_certificates WHERE {_EXPIRING}",
                                 params).fetchone()["n"]
        return [HostCertificate(**r) for r in rows], total


class RowCaRequests:
    """ScepGateway.CaRequestStats over ca_requests and the proxies' slot locks (pg_locks)."""

    def __init__(self, db):
        self._db = db

    def ca_request_stats(self, ca_name: str, window_seconds: int) -> CaRequestStats:
        _check(0 < len(ca_name) <= 255, "ca_name")
        _check(1 <= window_seconds <= MAX_WINDOW_SECONDS, "window_seconds")
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT outcome, count(*) AS n, avg(latency_ms) AS latency FROM ca_requests "
                "WHERE ca_name = %s AND created_at > now() - make_interval(secs => %s) "
                "GROUP BY outcome", (ca_name, window_seconds)).fetchall()
            in_flight = conn.execute(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 2 AND classid = %s::bigint::oid",
                (slot_lock_class(ca_name) & 0xFFFFFFFF,)).fetchone()["n"]
        answered = [r for r in rows if r["outcome"] != "busy"]
        total = sum(r["n"] for r in answered)
        return CaRequestStats(
            issued=sum(r["n"] for r in rows if r["outcome"] == "issued"),
            failed=sum(r["n"] for r in answered if r["outcome"] != "issued"),
            refused_busy=sum(r["n"] for r in rows if r["outcome"] == "busy"),
            in_flight=in_flight,
            average_latency_ms=(sum(r["latency"] * r["n"] for r in answered) / total
                                if total else None))


def row_owners(db) -> dict[str, Any]:
    """build_services' owner arguments, all answering from `db`'s rows."""
    return {"host_registry": RowHostRegistry(db), "deliveries": RowDeliveryDirectory(db),
            "ca_requests": RowCaRequests(db)}
