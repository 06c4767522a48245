"""The processor's copies of what other services own (migrations/0003_read_models.sql,
0005_scopes.sql): the certificate authorities, profiles (with their scope), labels and host teams
of admin-config, from the state each config.changed carries (mdmscep_common.config_events), and
the enrolled hosts and their facts of mdm-endpoint, from its host events. Label memberships
follow from labels and facts (scopes.py).

Applied in the transaction that records the event in the inbox. An event older than the newest
one applied to the same row (by its outbox `sequence`) changes nothing, so redelivered or
reordered events never bring back an old state.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from mdmscep_common import bus, config_events, fleet_vars
from mdmscep_common.bus import PoisonMessage

from . import scopes

log = logging.getLogger(__name__)

HOST = "host"
HOST_FACTS = "host_facts"


def _sequence(event: dict[str, Any]) -> int | None:
    sequence = event.get("sequence")
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None


def _newer(conn: psycopg.Connection, entity: str, key: str, sequence: int) -> bool:
    """Record `sequence` as the newest of the row, if it is; concurrent consumers of two events
    of one row wait for each other here."""
    return conn.execute(
        """INSERT INTO read_model_sequences (entity, entity_key, sequence) VALUES (%s, %s, %s)
           ON CONFLICT (entity, entity_key) DO UPDATE SET sequence = excluded.sequence
           WHERE read_model_sequences.sequence < excluded.sequence RETURNING 1""",
        (entity, key, sequence)).fetchone() is not None


def apply_config_change(conn: psycopg.Connection, event: dict[str, Any]) -> bool:
    """Apply a config.changed; True when the copy changed."""
    kind, sequence = event.get("kind"), _sequence(event)
    if kind not in config_events.KINDS:
        raise PoisonMessage(f"config.changed of unknown kind {kind!r}")
    if sequence is None or kind not in event:  # the state field is named after the kind
        # Published before events carried state (the migration seeded this copy after it).
        log.warning("config.changed without state ignored", extra={"kind": kind})
        return False
    apply = {config_events.CERTIFICATE_AUTHORITY: _apply_ca, config_events.PROFILE: _apply_profile,
             config_events.LABEL: _apply_label, config_events.HOST_TEAM: _apply_host_team}[kind]
    try:
        return apply(conn, event, sequence)
    except config_events.MalformedState as exc:
        raise PoisonMessage(str(exc)) from None


def _apply_ca(conn: psycopg.Connection, event: dict[str, Any], sequence: int) -> bool:
    state = event["certificate_authority"]
    ca = None if state is None else config_events.read_ca_state(state)
    ca_id = ca.id if ca is not None else event.get("id")
    if not isinstance(ca_id, int):
        raise PoisonMessage("config.changed of a certificate authority without id")
    if not _newer(conn, config_events.CERTIFICATE_AUTHORITY, str(ca_id), sequence):
        return False
    if ca is None:
        conn.execute("DELETE FROM known_certificate_authorities WHERE id = %s", (ca_id,))
        conn.execute("DELETE FROM ca_pacing WHERE ca_id = %s", (ca_id,))  # its learned rate
        return True
    conn.execute(
        """INSERT INTO known_certificate_authorities (id, name, url, challenge_encrypted,
                  ca_certificates_pem, max_concurrent_requests, max_issuance_per_second, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, url = excluded.url,
               challenge_encrypted = excluded.challenge_encrypted,
               ca_certificates_pem = excluded.ca_certificates_pem,
               max_concurrent_requests = excluded.max_concurrent_requests,
               max_issuance_per_second = excluded.max_issuance_per_second,
               updated_at = excluded.updated_at""",
        (ca.id, ca.name, ca.url, ca.challenge_encrypted, ca.ca_certificates_pem,
         ca.max_concurrent_requests, ca.max_issuance_per_second, ca.updated_at))
    return True


def _apply_profile(conn: psycopg.Connection, event: dict[str, Any], sequence: int) -> bool:
    state = event["profile"]
    profile = None if state is None else config_events.read_profile_state(state)
    profile_uuid = profile.uuid if profile is not None else event.get("profile_uuid")
    if not isinstance(profile_uuid, str) or not profile_uuid:
        raise PoisonMessage("config.changed of a profile without profile_uuid")
    if not _newer(conn, config_events.PROFILE, profile_uuid, sequence):
        return False
    if profile is None:
        conn.execute("DELETE FROM known_profiles WHERE uuid = %s", (profile_uuid,))
        return True
    conn.execute(
        """INSERT INTO known_profiles (uuid, identifier, name, raw, checksum, has_scep_payload,
                                       team_id, includes_any, uses_host_facts)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (uuid) DO UPDATE SET identifier = excluded.identifier,
               name = excluded.name, raw = excluded.raw, checksum = excluded.checksum,
               has_scep_payload = excluded.has_scep_payload, team_id = excluded.team_id,
               includes_any = excluded.includes_any, uses_host_facts = excluded.uses_host_facts""",
        (profile.uuid, profile.identifier, profile.name, profile.raw, profile.checksum,
         profile.has_scep_payload, profile.team_id,
         any(mode == "include_any" for mode, _ in profile.labels),
         fleet_vars.uses_host_facts(profile.raw)))
    conn.execute("DELETE FROM known_profile_certificate_authorities WHERE profile_uuid = %s",
                 (profile.uuid,))
    if profile.ca_ids:
        conn.execute("INSERT INTO known_profile_certificate_authorities (profile_uuid, ca_id) "
                     "SELECT %s, unnest(%s::bigint[])", (profile.uuid, list(profile.ca_ids)))
    conn.execute("DELETE FROM known_profile_labels WHERE profile_uuid = %s", (profile.uuid,))
    if profile.labels:
        conn.execute("INSERT INTO known_profile_labels (profile_uuid, label_id, mode) "
                     "SELECT %s, l.id, l.mode FROM unnest(%s::bigint[], %s::text[]) AS l(id, mode) "
                     "ON CONFLICT DO NOTHING",
                     (profile.uuid, [i for _, i in profile.labels], [m for m, _ in profile.labels]))
    return True


def _apply_label(conn: psycopg.Connection, event: dict[str, Any], sequence: int) -> bool:
    state = event["label"]
    label = None if state is None else config_events.read_label_state(state)
    label_id = label.id if label is not None else event.get("id")
    if not isinstance(label_id, int):
        raise PoisonMessage("config.changed of a label without id")
    if not _newer(conn, config_events.LABEL, str(label_id), sequence):
        return False
    if label is None:
        scopes.forget_label(conn, label_id)
    else:
        scopes.set_label(conn, label)
    return True


def _apply_host_team(conn: psycopg.Connection, event: dict[str, Any], sequence: int) -> bool:
    team = config_events.read_host_team_state(event["host_team"])
    if not _newer(conn, config_events.HOST_TEAM, team.host_uuid, sequence):
        return False
    if team.team_id is None:
        conn.execute("DELETE FROM known_host_teams WHERE host_uuid = %s", (team.host_uuid,))
    else:
        conn.execute("INSERT INTO known_host_teams (host_uuid, team_id) VALUES (%s, %s) "
                     "ON CONFLICT (host_uuid) DO UPDATE SET team_id = excluded.team_id",
                     (team.host_uuid, team.team_id))
    return True


def apply_host_event(conn: psycopg.Connection, routing_key: str, event: dict[str, Any]) -> bool:
    """host.enrolled adds the host; host.checked_out and host.deleted remove it; the facts that
    host.enrolled and host.facts_changed carry go to known_host_facts (and the host's dynamic
    label memberships follow). True when the copy changed."""
    host_uuid, sequence = event.get("host_uuid"), _sequence(event)
    if not isinstance(host_uuid, str) or not host_uuid:
        raise PoisonMessage(f"{routing_key} without host_uuid")
    if sequence is None:
        log.warning("host event without sequence ignored", extra={"routing_key": routing_key})
        return False
    facts_changed = False
    if isinstance(event.get("facts"), dict) and _newer(conn, HOST_FACTS, host_uuid, sequence):
        facts_changed = scopes.set_host_facts(conn, host_uuid, event["facts"])
    if routing_key == bus.HOST_FACTS_CHANGED:
        return facts_changed
    if not _newer(conn, HOST, host_uuid, sequence):
        return False
    if routing_key == bus.HOST_ENROLLED:
        conn.execute("INSERT INTO enrolled_hosts (uuid) VALUES (%s) ON CONFLICT DO NOTHING",
                     (host_uuid,))
    else:
        conn.execute("DELETE FROM enrolled_hosts WHERE uuid = %s", (host_uuid,))
    return True
