"""Which hosts a profile is for (Fleet's semantics): the hosts of its team (no team: hosts with no
team) that are in every label of its labels_include_all, in at least one of its
labels_include_any and in none of its labels_exclude_any.

Label memberships are kept in label_memberships (migrations/0005_scopes.sql): a manual label's
hosts as admin-config listed them; a dynamic label's hosts whose facts match its criteria
(mdmscep_common.label_criteria), evaluated here when the label or the host's facts change, so
the reconcile pass (store.DeliveryStore) works from one indexed table.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from mdmscep_common import fleet_vars, label_criteria
from mdmscep_common.config_events import LabelState

FACTS = ("serial_number", "model", "os_version", "product_name", "platform")

# (host_uuid, profile_uuid, identifier, name) of every enrolled host and every profile it is for.
IN_SCOPE = """
    SELECT h.uuid AS host_uuid, p.uuid AS profile_uuid, p.identifier, p.name
    FROM enrolled_hosts h
    LEFT JOIN known_host_teams t ON t.host_uuid = h.uuid
    JOIN known_profiles p ON COALESCE(p.team_id, 0) = COALESCE(t.team_id, 0)
    WHERE NOT EXISTS (
            SELECT 1 FROM known_profile_labels pl
            WHERE pl.profile_uuid = p.uuid AND pl.mode <> 'include_any'
              AND (pl.mode = 'include_all') <> EXISTS (
                  SELECT 1 FROM label_memberships m
                  WHERE m.label_id = pl.label_id AND m.host_uuid = h.uuid))
      AND (NOT p.includes_any OR EXISTS (
            SELECT 1 FROM known_profile_labels pl
            JOIN label_memberships m ON m.label_id = pl.label_id AND m.host_uuid = h.uuid
            WHERE pl.profile_uuid = p.uuid AND pl.mode = 'include_any'))
"""


def set_label(conn: psycopg.Connection, label: LabelState) -> None:
    """The label as admin-config now has it, and its memberships recomputed."""
    conn.execute(
        """INSERT INTO known_labels (id, name, criteria) VALUES (%s, %s, %s)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, criteria = excluded.criteria""",
        (label.id, label.name, None if label.criteria is None else json.dumps(label.criteria)))
    conn.execute("DELETE FROM label_memberships WHERE label_id = %s", (label.id,))
    if label.criteria is None:
        hosts = list(label.hosts)
    else:
        criteria = dict(label.criteria)
        hosts = [row["host_uuid"] for row in conn.execute(
            f"SELECT host_uuid, {', '.join(FACTS)} FROM known_host_facts").fetchall()
            if label_criteria.matches(criteria, row)]
    if hosts:
        conn.execute("INSERT INTO label_memberships (label_id, host_uuid) "
                     "SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING", (label.id, hosts))


def forget_label(conn: psycopg.Connection, label_id: int) -> None:
    conn.execute("DELETE FROM label_memberships WHERE label_id = %s", (label_id,))
    conn.execute("DELETE FROM known_labels WHERE id = %s", (label_id,))


def set_host_facts(conn: psycopg.Connection, host_uuid: str, facts: dict[str, Any]) -> bool:
    """The host's facts as mdm-endpoint last published them, and its dynamic label memberships
    re-evaluated. True when a membership changed."""
    values = {name: facts.get(name) if isinstance(facts.get(name), str) else "" for name in FACTS}
    before = conn.execute("SELECT serial_number, platform FROM known_host_facts "
                          "WHERE host_uuid = %s FOR UPDATE", (host_uuid,)).fetchone()
    if before is None or any(before[f] != values[f] for f in fleet_vars.HOST_FACT_VARIABLES.values()):
        _resend_host_fact_profiles(conn, host_uuid)
    conn.execute(
        f"""INSERT INTO known_host_facts (host_uuid, {', '.join(FACTS)})
            VALUES (%(host)s, {', '.join(f'%({n})s' for n in FACTS)})
            ON CONFLICT (host_uuid) DO UPDATE SET
                {', '.join(f'{n} = excluded.{n}' for n in FACTS)}""",
        {"host": host_uuid, **values})
    labels = conn.execute("SELECT id, criteria FROM known_labels WHERE criteria IS NOT NULL").fetchall()
    member_of = [r["id"] for r in labels if label_criteria.matches(r["criteria"], values)]
    dynamic = [r["id"] for r in labels]
    left = conn.execute(
        "DELETE FROM label_memberships WHERE host_uuid = %s AND label_id = ANY(%s) "
        "AND NOT label_id = ANY(%s)", (host_uuid, dynamic, member_of)).rowcount
    joined = conn.execute(
        "INSERT INTO label_memberships (label_id, host_uuid) SELECT unnest(%s::bigint[]), %s "
        "ON CONFLICT DO NOTHING", (member_of, host_uuid)).rowcount if member_of else 0
    return bool(left or joined)


def _resend_host_fact_profiles(conn: psycopg.Connection, host_uuid: str) -> None:
    """The host's copies of profiles that read its serial number or platform are out of date:
    those sent are delivered again with a fresh budget; those waiting for the fact go now."""
    conn.execute(
        """UPDATE host_profiles hp SET status = 'pending', attempts = 0,
                  ca_unreachable_retries = 0, detail = '', next_attempt_at = now(),
                  updated_at = now()
           FROM known_profiles p
           WHERE p.uuid = hp.profile_uuid AND p.uses_host_facts AND hp.host_uuid = %s
             AND hp.operation_type = 'install'
             AND (hp.command_uuid IS NOT NULL
                  OR (hp.paced_until IS NULL AND hp.queued_for_ca IS NULL))""", (host_uuid,))
