"""profile-processor's SQL: host_profiles, scep_codes and host_certificates (owned), with the
reads admin-config asks for (DeliveryDirectory), and reads of its read models of what other
services own (known_profiles and known_certificate_authorities of admin-config, enrolled_hosts of
mdm-endpoint: read_models.py). One query per batch; the
arrays of the per-batch statements of a delivery go in binary (%b), which spares their quoting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from .rendering import HostValues
from .scopes import IN_SCOPE

MAX_ATTEMPTS = 3

# The revision of what a host should have: the profile's bytes and the edit time of its CAs.
_DESIRED = """
    SELECT p.uuid AS profile_uuid, p.identifier, p.name,
           encode(p.checksum, 'hex') || ':' ||
           COALESCE(string_agg(extract(epoch FROM ca.updated_at)::text, ',' ORDER BY ca.id), '')
               AS revision
    FROM known_profiles p
    LEFT JOIN known_profile_certificate_authorities pc ON pc.profile_uuid = p.uuid
    LEFT JOIN known_certificate_authorities ca ON ca.id = pc.ca_id
    GROUP BY p.uuid
"""


class DeliveryStore:
    # -- reconcile: desired state ------------------------------------------------------------

    def add_missing_deliveries(self, conn: psycopg.Connection) -> int:
        """Every enrolled host should have the profiles it is in scope of (scopes.IN_SCOPE): add
        the rows that are missing. A profile being removed from a host that is back in its scope
        is installed again (a new command: a result of the RemoveProfile changes nothing).

        Only the rows added or reinstalled are locked. (An INSERT ... ON CONFLICT DO UPDATE
        locks every conflicting row, even where its WHERE is false: every delivery in scope,
        the whole table, for the pass's transaction, and the event handlers' transactions
        waited for it or deadlocked with it.)"""
        return conn.execute(
            f"""WITH in_scope AS ({IN_SCOPE}),
                added AS (
                    INSERT INTO host_profiles (host_uuid, profile_uuid, identifier, profile_name)
                    SELECT s.host_uuid, s.profile_uuid, s.identifier, s.name FROM in_scope s
                    WHERE NOT EXISTS (
                        SELECT 1 FROM host_profiles hp
                        WHERE hp.host_uuid = s.host_uuid AND hp.profile_uuid = s.profile_uuid)
                    ON CONFLICT (host_uuid, profile_uuid) DO NOTHING RETURNING 1),
                reinstalled AS (
                    UPDATE host_profiles hp SET
                        operation_type = 'install', status = 'pending', attempts = 0,
                        ca_unreachable_retries = 0, detail = '', revision = NULL,
                        command_uuid = NULL, identifier = s.identifier, profile_name = s.name,
                        next_attempt_at = now(), updated_at = now()
                    FROM in_scope s
                    WHERE hp.operation_type = 'remove' AND hp.host_uuid = s.host_uuid
                      AND hp.profile_uuid = s.profile_uuid RETURNING 1)
                SELECT (SELECT count(*) FROM added) + (SELECT count(*) FROM reinstalled) AS n"""
        ).fetchone()["n"]

    def resend_changed(self, conn: psycopg.Connection) -> int:
        """A profile or one of its CAs changed since it was sent: deliver again, fresh budget."""
        return conn.execute(
            f"""UPDATE host_profiles hp SET status = 'pending', attempts = 0,
                       ca_unreachable_retries = 0, detail = '',
                       next_attempt_at = now(), updated_at = now()
                FROM ({_DESIRED}) d
                WHERE hp.profile_uuid = d.profile_uuid AND hp.operation_type = 'install'
                  AND hp.revision IS NOT NULL AND hp.revision <> d.revision""").rowcount

    def remove_out_of_scope(self, conn: psycopg.Connection) -> int:
        """Installs the host is no longer in scope of (the profile deleted, the host moved to
        another team, its labels or the profile's rule changed): never sent → forget; sent →
        RemoveProfile (the host's certificates of the profile go with it). The scope is worked
        out once for both."""
        return conn.execute(
            f"""WITH out_of_scope AS (
                    SELECT hp.host_uuid, hp.profile_uuid, hp.command_uuid IS NULL AS unsent
                    FROM host_profiles hp
                    WHERE hp.operation_type = 'install' AND NOT EXISTS (
                        SELECT 1 FROM ({IN_SCOPE}) s
                        WHERE s.host_uuid = hp.host_uuid AND s.profile_uuid = hp.profile_uuid)),
                forgotten AS (
                    DELETE FROM host_profiles hp USING out_of_scope o
                    WHERE o.unsent AND hp.host_uuid = o.host_uuid
                      AND hp.profile_uuid = o.profile_uuid RETURNING 1),
                removing AS (
                    UPDATE host_profiles hp SET operation_type = 'remove', status = 'pending',
                           attempts = 0, ca_unreachable_retries = 0, detail = '',
                           revision = NULL, paced_until = NULL, queued_for_ca = NULL,
                           next_attempt_at = now(), updated_at = now()
                    FROM out_of_scope o
                    WHERE NOT o.unsent AND hp.host_uuid = o.host_uuid
                      AND hp.profile_uuid = o.profile_uuid RETURNING 1)
                SELECT (SELECT count(*) FROM forgotten) + (SELECT count(*) FROM removing) AS n"""
        ).fetchone()["n"]

    def drop_unenrolled(self, conn: psycopg.Connection) -> int:
        conn.execute("DELETE FROM scep_codes c WHERE NOT EXISTS (SELECT 1 FROM enrolled_hosts h "
                     "WHERE h.uuid = c.host_uuid)")
        return conn.execute("DELETE FROM host_profiles hp WHERE NOT EXISTS ("
                            "SELECT 1 FROM enrolled_hosts h WHERE h.uuid = hp.host_uuid)").rowcount

    def drop_host(self, conn: psycopg.Connection, host_uuid: str) -> None:
        conn.execute("DELETE FROM host_profiles WHERE host_uuid = %s", (host_uuid,))
        conn.execute("DELETE FROM scep_codes WHERE host_uuid = %s", (host_uuid,))

    # -- sending -------------------------------------------------------------------------------

    def claim_due(self, conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
        """Pending deliveries whose time has come, locked for this transaction; rows another
        replica holds are skipped, so no delivery is sent twice."""
        return conn.execute(
            """SELECT host_uuid, profile_uuid, operation_type, identifier, attempts, command_uuid,
                      detail, paced_until
               FROM host_profiles WHERE status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED""", (limit,)).fetchall()

    def desired(self, conn: psycopg.Connection, profile_uuids: list[str]) -> dict[str, dict[str, Any]]:
        rows = conn.execute(
            f"""SELECT d.*, p.raw FROM ({_DESIRED}) d JOIN known_profiles p ON p.uuid = d.profile_uuid
                WHERE d.profile_uuid = ANY(%s)""", (profile_uuids,)).fetchall()
        return {r["profile_uuid"]: {**r, "raw": bytes(r["raw"])} for r in rows}

    def certificate_authorities_of(self, conn: psycopg.Connection,
                                   profile_uuids: list[str]) -> dict[str, list[dict[str, Any]]]:
        rows = conn.execute(
            """SELECT pc.profile_uuid, ca.id, ca.name, ca.url, ca.challenge_encrypted,
                      ca.max_concurrent_requests, ca.max_issuance_per_second
               FROM known_profile_certificate_authorities pc
               JOIN known_certificate_authorities ca ON ca.id = pc.ca_id
               WHERE pc.profile_uuid = ANY(%s)""", (profile_uuids,)).fetchall()
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["profile_uuid"], []).append(
                {**r, "challenge_encrypted": bytes(r["challenge_encrypted"])})
        return out

    def host_values(self, conn: psycopg.Connection, hosts: list[str]) -> dict[str, HostValues]:
        """What the host variables read, per host (known_host_facts)."""
        if not hosts:
            return {}
        rows = conn.execute("SELECT host_uuid, serial_number, platform FROM known_host_facts "
                            "WHERE host_uuid = ANY(%s)", (hosts,)).fetchall()
        return {r["host_uuid"]: HostValues(r["serial_number"], r["platform"]) for r in rows}

    def wait_for_facts(self, conn: psycopg.Connection, waiting: list[tuple[str, str, str]],
                       seconds: float) -> None:
        if waiting:
            conn.execute(
                """UPDATE host_profiles hp SET detail = w.detail, paced_until = NULL,
                          queued_for_ca = NULL, updated_at = now(),
                          next_attempt_at = now() + make_interval(secs => %s)
                   FROM unnest(%s::text[], %s::text[], %s::text[]) AS w(host_uuid, profile_uuid, detail)
                   WHERE hp.host_uuid = w.host_uuid AND hp.profile_uuid = w.profile_uuid""",
                (seconds, [w[0] for w in waiting], [w[1] for w in waiting],
                 [w[2] for w in waiting]))

    def mark_failed(self, conn: psycopg.Connection, keys: list[tuple[str, str]], details: list[str]) -> None:
        if keys:
            conn.execute(
                """UPDATE host_profiles hp SET status = 'failed', detail = f.detail, updated_at = now()
                   FROM unnest(%s::text[], %s::text[], %s::text[]) AS f(host_uuid, profile_uuid, detail)
                   WHERE hp.host_uuid = f.host_uuid AND hp.profile_uuid = f.profile_uuid""",
                ([k[0] for k in keys], [k[1] for k in keys], details))

    def mark_sent(self, conn: psycopg.Connection, sent: list[dict[str, Any]], redeliver_after: float) -> None:
        """Record the command each delivery was sent with, its revision and when to re-send if
        the host stays silent (its one-time code expires then)."""
        if sent:
            conn.execute(
                """UPDATE host_profiles hp SET command_uuid = s.command_uuid, revision = s.revision,
                          attempts = hp.attempts + 1, sent_at = now(), updated_at = now(),
                          paced_until = NULL, queued_for_ca = NULL, ca_answer = NULL,
                          next_attempt_at = now() + make_interval(secs => %s)
                   FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[])
                        AS s(host_uuid, profile_uuid, command_uuid, revision)
                   WHERE hp.host_uuid = s.host_uuid AND hp.profile_uuid = s.profile_uuid""",
                (redeliver_after, [s["host_uuid"] for s in sent], [s["profile_uuid"] for s in sent],
                 [s["command_uuid"] for s in sent], [s["revision"] for s in sent]))

    def add_codes(self, conn: psycopg.Connection, codes: list[tuple[bytes, str, str, str, str]],
                  expires_at: datetime) -> None:
        if codes:
            conn.execute(
                """INSERT INTO scep_codes (code_sha256, host_uuid, profile_uuid, ca_name,
                                           command_uuid, expires_at)
                   SELECT c.sha, c.host_uuid, c.profile_uuid, c.ca_name, c.command_uuid, %s
                   FROM unnest(%b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[])
                        AS c(sha, host_uuid, profile_uuid, ca_name, command_uuid)""",
                (expires_at, [c[0] for c in codes], [c[1] for c in codes], [c[2] for c in codes],
                 [c[3] for c in codes], [c[4] for c in codes]))

    def lock_pacing(self, conn: psycopg.Connection, ca_id: int) -> dict[str, Any]:
        """The CA's ca_pacing row, locked till commit (every replica paces with it): its learned
        rate, its queue's end, `start` (its next free issuance slot, not before now) and the
        database's `now`."""
        conn.execute("INSERT INTO ca_pacing (ca_id) VALUES (%s) ON CONFLICT DO NOTHING", (ca_id,))
        return conn.execute(
            """SELECT per_second, queue_until, GREATEST(next_slot_at, now()) AS start, now() AS now
               FROM ca_pacing WHERE ca_id = %s FOR UPDATE""", (ca_id,)).fetchone()

    def take_slots(self, conn: psycopg.Connection, ca_id: int, count: int, per_second: float) -> None:
        """`count` issuance slots of the (locked) CA taken, from its next free one on."""
        if count:
            conn.execute("UPDATE ca_pacing SET next_slot_at = GREATEST(next_slot_at, now()) "
                         "+ make_interval(secs => %s) WHERE ca_id = %s",
                         (count / per_second, ca_id))

    def take_queued(self, conn: psycopg.Connection, ca_id: int, limit: int) -> list[dict[str, Any]]:
        """The first `limit` deliveries waiting in the CA's queue, locked for this transaction
        (those another replica holds are skipped), whether or not their estimated time came."""
        return conn.execute(
            """SELECT host_uuid, profile_uuid, operation_type, identifier, attempts, command_uuid,
                      detail, paced_until
               FROM host_profiles WHERE queued_for_ca = %s AND status = 'pending'
                 AND operation_type = 'install'
               ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED""",
            (ca_id, limit)).fetchall()

    def queue(self, conn: psycopg.Connection, ca_id: int,
              waiting: list[tuple[str, str, datetime, str]], queue_until: datetime | None) -> None:
        """Deliveries beyond the reserved horizon join the CA's queue (no slot yet; `at`: the
        estimated turn, their place in line); `queue_until` (None: empty): where the next one
        joins it."""
        if waiting:
            conn.execute(
                """UPDATE host_profiles hp SET next_attempt_at = w.at, paced_until = NULL,
                          queued_for_ca = %s, detail = w.detail, updated_at = now()
                   FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[])
                        AS w(host_uuid, profile_uuid, at, detail)
                   WHERE hp.host_uuid = w.host_uuid AND hp.profile_uuid = w.profile_uuid""",
                (ca_id, [w[0] for w in waiting], [w[1] for w in waiting], [w[2] for w in waiting],
                 [w[3] for w in waiting]))
        conn.execute("UPDATE ca_pacing SET queue_until = %s WHERE ca_id = %s", (queue_until, ca_id))

    def cas_with_queue(self, conn: psycopg.Connection, horizon: float) -> list[dict[str, Any]]:
        """CAs with deliveries in their queue and a free slot within `horizon` s.

        A queue is known by its CA's queue_until, not by looking in host_profiles: the pass asks
        once per batch, and right after a big upload host_profiles' statistics are those of a
        far smaller table, which had PostgreSQL scan it whole each time (30 ms at 100k hosts).
        queue_until is set whenever deliveries join the queue (queue) and cleared by the pass
        that finds it empty (Reconciler._pace), so a queue emptied otherwise (its deliveries
        deleted) costs one look."""
        return conn.execute(
            """SELECT ca.id, ca.name, ca.max_concurrent_requests, ca.max_issuance_per_second
               FROM ca_pacing p JOIN known_certificate_authorities ca ON ca.id = p.ca_id
               WHERE p.next_slot_at < now() + make_interval(secs => %s)
                 AND p.queue_until IS NOT NULL
               ORDER BY ca.id""", (horizon,)).fetchall()

    def postpone(self, conn: psycopg.Connection, waiting: list[tuple[str, str, datetime, str]]) -> None:
        """Deliveries holding an issuance slot: sent at that time, without another."""
        if waiting:
            conn.execute(
                """UPDATE host_profiles hp SET next_attempt_at = w.at, paced_until = w.at,
                          queued_for_ca = NULL, detail = w.detail, updated_at = now()
                   FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[])
                        AS w(host_uuid, profile_uuid, at, detail)
                   WHERE hp.host_uuid = w.host_uuid AND hp.profile_uuid = w.profile_uuid""",
                ([w[0] for w in waiting], [w[1] for w in waiting], [w[2] for w in waiting],
                 [w[3] for w in waiting]))

    def next_due_at(self, conn: psycopg.Connection, horizon: float) -> datetime | None:
        """The next pending delivery's time, or sooner when a CA's queue gets a free slot within
        `horizon` (its queued deliveries are taken at the rate of the moment, which may be ahead
        of their estimates)."""
        row = conn.execute(
            """SELECT LEAST(
                   (SELECT min(next_attempt_at) FROM host_profiles WHERE status = 'pending'),
                   (SELECT min(p.next_slot_at) - make_interval(secs => %s) FROM ca_pacing p
                    WHERE p.queue_until IS NOT NULL)
               ) AS at""", (horizon,)).fetchone()
        return row["at"]

    # -- verification --------------------------------------------------------------------------

    def hosts_to_verify(self, conn: psycopg.Connection, verify_interval: float,
                        lost_after: float, limit: int) -> list[str]:
        rows = conn.execute(
            """SELECT DISTINCT host_uuid FROM host_profiles
               WHERE operation_type = 'install' AND (
                   (status = 'verified' AND verified_at < now() - make_interval(secs => %(v)s)
                    AND (verify_requested_at IS NULL
                         OR verify_requested_at < now() - make_interval(secs => %(v)s)))
                OR (status = 'verifying'
                    AND COALESCE(verify_requested_at, updated_at)
                        < now() - make_interval(secs => %(lost)s)))
               LIMIT %(limit)s""", {"v": verify_interval, "lost": lost_after, "limit": limit}).fetchall()
        return [r["host_uuid"] for r in rows]

    def previous_verify_commands(self, conn: psycopg.Connection, hosts: list[str]) -> dict[str, str]:
        rows = conn.execute(
            """SELECT DISTINCT ON (host_uuid) host_uuid, verify_command_uuid FROM host_profiles
               WHERE host_uuid = ANY(%s) AND verify_command_uuid IS NOT NULL
               ORDER BY host_uuid, verify_requested_at DESC NULLS LAST""", (hosts,)).fetchall()
        return {r["host_uuid"]: r["verify_command_uuid"] for r in rows}

    def verification_requested(self, conn: psycopg.Connection, host_commands: dict[str, str]) -> None:
        if host_commands:
            conn.execute(
                """UPDATE host_profiles hp SET verify_command_uuid = v.command_uuid,
                          verify_requested_at = now()
                   FROM unnest(%s::text[], %s::text[]) AS v(host_uuid, command_uuid)
                   WHERE hp.host_uuid = v.host_uuid AND hp.operation_type = 'install'
                     AND hp.status IN ('verifying', 'verified')""",
                (list(host_commands), list(host_commands.values())))

    # -- results -------------------------------------------------------------------------------

    def delivery_for_command(self, conn: psycopg.Connection, command_uuid: str) -> dict[str, Any] | None:
        return conn.execute(
            """SELECT host_uuid, profile_uuid, operation_type, status, attempts, identifier,
                      ca_answer, command_uuid, ca_unreachable_command, ca_unreachable_retries
               FROM host_profiles WHERE command_uuid = %s FOR UPDATE""", (command_uuid,)).fetchone()

    def delivery(self, conn: psycopg.Connection, host_uuid: str, profile_uuid: str) -> dict[str, Any] | None:
        return conn.execute(
            """SELECT host_uuid, profile_uuid, operation_type, status, attempts, identifier,
                      ca_answer, command_uuid, ca_unreachable_command, ca_unreachable_retries
               FROM host_profiles WHERE host_uuid = %s AND profile_uuid = %s FOR UPDATE""",
            (host_uuid, profile_uuid)).fetchone()

    def expire_codes(self, conn: psycopg.Connection, host_uuid: str, profile_uuid: str,
                     command_uuid: str) -> None:
        """The codes of an attempt the host has finished: none of them can be used from now on."""
        conn.execute("UPDATE scep_codes SET expires_at = now() WHERE host_uuid = %s "
                     "AND profile_uuid = %s AND command_uuid = %s AND expires_at > now()",
                     (host_uuid, profile_uuid, command_uuid))

    def command_of_code(self, conn: psycopg.Connection, code_sha256: bytes) -> str | None:
        """The command (attempt) a one-time code was issued with."""
        row = conn.execute("SELECT command_uuid FROM scep_codes WHERE code_sha256 = %s",
                           (code_sha256,)).fetchone()
        return row["command_uuid"] if row else None

    def update(self, conn: psycopg.Connection, host_uuid: str, profile_uuid: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = %({name})s" for name in fields)
        conn.execute(f"UPDATE host_profiles SET {columns}, updated_at = now() "
                     "WHERE host_uuid = %(h)s AND profile_uuid = %(p)s",
                     {**fields, "h": host_uuid, "p": profile_uuid})

    # -- certificate inventory and renewal -----------------------------------------------------

    def scep_deliveries(self, conn: psycopg.Connection, host_uuid: str) -> list[dict[str, Any]]:
        """The host's installed SCEP profiles with their raw bytes and CA certificates."""
        return conn.execute(
            """SELECT hp.profile_uuid, p.raw,
                      COALESCE(string_agg(ca.ca_certificates_pem, ''), '') AS ca_pem
               FROM host_profiles hp
               JOIN known_profiles p ON p.uuid = hp.profile_uuid AND p.has_scep_payload
               LEFT JOIN known_profile_certificate_authorities pc ON pc.profile_uuid = p.uuid
               LEFT JOIN known_certificate_authorities ca ON ca.id = pc.ca_id
               WHERE hp.host_uuid = %s AND hp.operation_type = 'install'
               GROUP BY hp.profile_uuid, p.raw""", (host_uuid,)).fetchall()

    def replace_inventory(self, conn: psycopg.Connection, host_uuid: str, held: list) -> None:
        conn.execute("DELETE FROM host_certificates WHERE host_uuid = %s", (host_uuid,))
        if held:
            with conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO host_certificates (host_uuid, profile_uuid, sha256, serial, subject,
                                                      issuer, not_before, not_after)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    [(host_uuid, h.profile_uuid, h.sha256, h.serial, h.subject, h.issuer,
                      h.not_before, h.not_after) for h in held])

    def has_scep_deliveries(self, conn: psycopg.Connection, hosts: list[str]) -> set[str]:
        rows = conn.execute(
            """SELECT DISTINCT hp.host_uuid FROM host_profiles hp
               JOIN known_profiles p ON p.uuid = hp.profile_uuid AND p.has_scep_payload
               WHERE hp.host_uuid = ANY(%s) AND hp.operation_type = 'install'""", (hosts,)).fetchall()
        return {r["host_uuid"] for r in rows}

    def verified_scep(self, conn: psycopg.Connection, host_uuid: str) -> list[dict[str, Any]]:
        return conn.execute(
            """SELECT hp.profile_uuid FROM host_profiles hp
               JOIN known_profiles p ON p.uuid = hp.profile_uuid AND p.has_scep_payload
               WHERE hp.host_uuid = %s AND hp.operation_type = 'install'
                 AND hp.status = 'verified' FOR UPDATE OF hp""", (host_uuid,)).fetchall()

    def promote_verified(self, conn: psycopg.Connection, host_uuid: str) -> int:
        """Verifying deliveries the host lists — and, for SCEP profiles, whose certificate it
        holds (not the one being renewed) — become verified."""
        return conn.execute(
            """UPDATE host_profiles hp SET status = 'verified', detail = '', verified_at = now(),
                      replacing_sha256 = NULL, updated_at = now()
               FROM known_profiles p
               WHERE hp.host_uuid = %s AND p.uuid = hp.profile_uuid
                 AND hp.operation_type = 'install' AND hp.status = 'verifying'
                 AND hp.listed_at IS NOT NULL AND hp.listed_at >= hp.acknowledged_at
                 AND (NOT p.has_scep_payload OR EXISTS (
                      SELECT 1 FROM host_certificates c
                      WHERE c.host_uuid = hp.host_uuid AND c.profile_uuid = hp.profile_uuid
                        AND c.not_after > now()
                        AND c.sha256 IS DISTINCT FROM hp.replacing_sha256))""",
            (host_uuid,)).rowcount

    def fail_missing_certificates(self, conn: psycopg.Connection, wait_seconds: float) -> int:
        return conn.execute(
            """UPDATE host_profiles hp SET status = 'failed', updated_at = now(),
                      detail = 'The host acknowledged the profile but holds no certificate from '
                               || 'its certificate authority after ' || %(wait)s::int
                               || ' s: the SCEP enrollment did not complete on the host'
               FROM known_profiles p
               WHERE p.uuid = hp.profile_uuid AND p.has_scep_payload
                 AND hp.operation_type = 'install' AND hp.status = 'verifying'
                 AND hp.acknowledged_at < now() - make_interval(secs => %(wait)s)""",
            {"wait": wait_seconds}).rowcount

    def renewal_candidates(self, conn: psycopg.Connection, horizon: datetime) -> list[dict[str, Any]]:
        """Verified SCEP deliveries whose newest certificate expires before `horizon`."""
        return conn.execute(
            """SELECT * FROM (
                   SELECT DISTINCT ON (c.host_uuid, c.profile_uuid) c.host_uuid, c.profile_uuid,
                          c.sha256, c.not_before, c.not_after
                   FROM host_certificates c
                   JOIN host_profiles hp ON hp.host_uuid = c.host_uuid
                        AND hp.profile_uuid = c.profile_uuid
                   WHERE hp.status = 'verified' AND hp.operation_type = 'install'
                   ORDER BY c.host_uuid, c.profile_uuid, c.not_after DESC) newest
               WHERE newest.not_after < %s""", (horizon,)).fetchall()

    def start_renewals(self, conn: psycopg.Connection, renewals: list[dict[str, Any]]) -> int:
        if not renewals:
            return 0
        return conn.execute(
            """UPDATE host_profiles hp SET status = 'pending', attempts = 0,
                      ca_unreachable_retries = 0, next_attempt_at = now(),
                      replacing_sha256 = r.sha256, updated_at = now(),
                      detail = 'Renewing the certificate that expires ' || r.expires
               FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[])
                    AS r(host_uuid, profile_uuid, sha256, expires)
               WHERE hp.host_uuid = r.host_uuid AND hp.profile_uuid = r.profile_uuid
                 AND hp.status = 'verified'""",
            ([r["host_uuid"] for r in renewals], [r["profile_uuid"] for r in renewals],
             [r["sha256"] for r in renewals],
             [r["not_after"].strftime("%Y-%m-%d %H:%M UTC") for r in renewals])).rowcount

    def resend(self, conn: psycopg.Connection, profile_uuid: str, host_uuid: str | None,
               only_failed: bool) -> int:
        """A fresh delivery with a new budget of attempts (the queued command, if any, is
        replaced when it is sent)."""
        return conn.execute(
            """UPDATE host_profiles SET status = 'pending', attempts = 0,
                      ca_unreachable_retries = 0, detail = '',
                      next_attempt_at = now(), updated_at = now()
               WHERE profile_uuid = %(p)s AND operation_type = 'install'
                 AND (%(h)s::text IS NULL OR host_uuid = %(h)s)
                 AND (NOT %(failed)s OR status = 'failed')""",
            {"p": profile_uuid, "h": host_uuid, "failed": only_failed}).rowcount

    def note_pending_detail(self, conn: psycopg.Connection, host_uuid: str, profile_uuid: str,
                            detail: str) -> None:
        conn.execute("UPDATE host_profiles SET detail = %s, updated_at = now() "
                     "WHERE host_uuid = %s AND profile_uuid = %s AND status = 'pending'",
                     (detail, host_uuid, profile_uuid))

    def delete(self, conn: psycopg.Connection, host_uuid: str, profile_uuid: str) -> None:
        """The host removed the profile, and with it the certificates it brought."""
        conn.execute("DELETE FROM host_profiles WHERE host_uuid = %s AND profile_uuid = %s",
                     (host_uuid, profile_uuid))
        conn.execute("DELETE FROM host_certificates WHERE host_uuid = %s AND profile_uuid = %s",
                     (host_uuid, profile_uuid))

    def being_verified(self, conn: psycopg.Connection, host_uuid: str,
                       command_uuid: str) -> list[dict[str, Any]]:
        return conn.execute(
            """SELECT profile_uuid, identifier, status, attempts FROM host_profiles
               WHERE host_uuid = %s AND verify_command_uuid = %s AND operation_type = 'install'
                 AND status IN ('verifying', 'verified') FOR UPDATE""",
            (host_uuid, command_uuid)).fetchall()


# -- what admin-config shows (DeliveryDirectory): reads only ------------------------------------

@dataclass(frozen=True)
class DeliveryRecord:
    host_uuid: str
    profile_uuid: str
    profile_name: str
    identifier: str
    operation_type: str
    status: str
    detail: str
    updated_at: datetime


@dataclass(frozen=True)
class CertificateRecord:
    host_uuid: str
    profile_uuid: str
    serial: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime


_DELIVERY = ("SELECT host_uuid, profile_uuid, profile_name, identifier, operation_type, status, "
             "detail, updated_at FROM host_profiles")
_CERTIFICATE = ("SELECT host_uuid, profile_uuid, serial, subject, issuer, not_before, not_after "
                "FROM host_certificates")
# A certificate expiring within %(within)s seconds (NULL: any).
_EXPIRING = ("(%(within)s::float8 IS NULL "
             "OR not_after < now() + make_interval(secs => %(within)s::float8))")


def _by_status(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["status"]: r["n"] for r in rows}


class DeliveryDirectoryStore:
    def install_counts_of_profile(self, conn: psycopg.Connection, profile_uuid: str) -> dict[str, int]:
        return _by_status(conn.execute(
            "SELECT status, count(*) AS n FROM host_profiles WHERE profile_uuid = %s "
            "AND operation_type = 'install' GROUP BY status", (profile_uuid,)).fetchall())

    def counts_of_host(self, conn: psycopg.Connection, host_uuid: str) -> dict[str, int]:
        """Every delivery of the host, removals too."""
        return _by_status(conn.execute(
            "SELECT status, count(*) AS n FROM host_profiles WHERE host_uuid = %s GROUP BY status",
            (host_uuid,)).fetchall())

    def paced_counts_of_ca(self, conn: psycopg.Connection, ca_name: str) -> dict[str, int]:
        """Pending installs of the profiles using the CA that wait for their issuance turn."""
        return _by_status(conn.execute(
            """SELECT hp.status, count(*) AS n FROM host_profiles hp
               WHERE hp.operation_type = 'install' AND hp.status = 'pending'
                 AND (hp.paced_until > now() OR hp.queued_for_ca IS NOT NULL)
                 AND hp.profile_uuid IN (
                     SELECT pc.profile_uuid FROM known_profile_certificate_authorities pc
                     JOIN known_certificate_authorities ca ON ca.id = pc.ca_id WHERE ca.name = %s)
               GROUP BY hp.status""", (ca_name,)).fetchall())

    def deliveries_of_profile(self, conn: psycopg.Connection, profile_uuid: str,
                              status: str | None, limit: int,
                              offset: int) -> tuple[list[DeliveryRecord], int]:
        params = {"p": profile_uuid, "s": status, "limit": limit, "offset": offset}
        where = "WHERE profile_uuid = %(p)s AND (%(s)s::text IS NULL OR status = %(s)s)"
        rows = conn.execute(f"{_DELIVERY} {where} ORDER BY host_uuid "
                            "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) AS n FROM host_profiles {where}",
                             params).fetchone()["n"]
        return [DeliveryRecord(**r) for r in rows], total

    def deliveries_of_host(self, conn: psycopg.Connection, host_uuid: str,
                           status: str | None) -> list[DeliveryRecord]:
        rows = conn.execute(
            f"{_DELIVERY} WHERE host_uuid = %(h)s AND (%(s)s::text IS NULL OR status = %(s)s) "
            "ORDER BY created_at, profile_uuid", {"h": host_uuid, "s": status}).fetchall()
        return [DeliveryRecord(**r) for r in rows]

    def hosts_with_deliveries(self, conn: psycopg.Connection, profile_uuid: str | None,
                              status: str | None, host_uuids: list[str] | None, limit: int,
                              offset: int) -> tuple[list[str], int]:
        params = {"p": profile_uuid, "s": status, "hosts": host_uuids, "limit": limit,
                  "offset": offset}
        where = """WHERE (%(p)s::text IS NULL OR profile_uuid = %(p)s)
                     AND (%(s)s::text IS NULL OR status = %(s)s)
                     AND (%(hosts)s::text[] IS NULL OR host_uuid = ANY(%(hosts)s))"""
        rows = conn.execute(f"SELECT DISTINCT host_uuid FROM host_profiles {where} "
                            "ORDER BY host_uuid LIMIT %(limit)s OFFSET %(offset)s",
                            params).fetchall()
        total = conn.execute(f"SELECT count(DISTINCT host_uuid) AS n FROM host_profiles {where}",
                             params).fetchone()["n"]
        return [r["host_uuid"] for r in rows], total

    def certificates_of_host(self, conn: psycopg.Connection, host_uuid: str,
                             within_seconds: float | None) -> list[CertificateRecord]:
        rows = conn.execute(f"{_CERTIFICATE} WHERE host_uuid = %(h)s AND {_EXPIRING} "
                            "ORDER BY not_after, serial",
                            {"h": host_uuid, "within": within_seconds}).fetchall()
        return [CertificateRecord(**r) for r in rows]

    def certificates(self, conn: psycopg.Connection, within_seconds: float | None, limit: int,
                     offset: int) -> tuple[list[CertificateRecord], int]:
        params = {"within": within_seconds, "limit": limit, "offset": offset}
        rows = conn.execute(f"{_CERTIFICATE} WHERE {_EXPIRING} "
                            "ORDER BY not_after, host_uuid, serial "
                            "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
        total = conn.execute(f"SELECT count(*) AS n FROM host_certificates WHERE {_EXPIRING}",
                             params).fetchone()["n"]
        return [CertificateRecord(**r) for r in rows], total
