"""For tests that write rows of admin-config (CAs, profiles) or mdm-endpoint (hosts) directly, in
SQL: bring the profile-processor's read models level with those rows, as its migration seeds them
(profile_processor/migrations/0003_read_models.sql). In the product only events change them
(profile_processor/read_models.py); tests of that path go through the events."""

from __future__ import annotations

_COPIES = (
    "DELETE FROM profile_processor.known_profile_certificate_authorities",
    "DELETE FROM profile_processor.known_profiles",
    "DELETE FROM profile_processor.known_certificate_authorities",
    "DELETE FROM profile_processor.enrolled_hosts",
    """INSERT INTO profile_processor.known_certificate_authorities
       SELECT id, name, url, challenge_encrypted, ca_certificates_pem, max_concurrent_requests,
              max_issuance_per_second, updated_at
       FROM admin_config.certificate_authorities""",
    """INSERT INTO profile_processor.known_profiles
       SELECT uuid, identifier, name, raw, checksum, has_scep_payload FROM admin_config.profiles""",
    """INSERT INTO profile_processor.known_profile_certificate_authorities
       SELECT profile_uuid, ca_id FROM admin_config.profile_certificate_authorities""",
    "INSERT INTO profile_processor.enrolled_hosts SELECT uuid FROM mdm_endpoint.hosts WHERE enrolled",
)


def copy_owned_rows_to_processor(conn) -> None:
    """`conn`: a connection of the database's owner (the tests' own, with dict rows, as for the
    two functions below), in the caller's transaction."""
    for statement in _COPIES:
        conn.execute(statement)


def apply_recorded_events(conn, events) -> int:
    """Hand the events a service recorded (tests/support/recording_publisher.py) to the
    processor's read models, numbered after everything applied so far as the relay numbers
    them (mdmscep_common/outbox.py); returns how many changed a copy."""
    from mdmscep_common import bus
    from profile_processor import read_models

    last = conn.execute("SELECT COALESCE(max(sequence), 0) AS n "
                        "FROM profile_processor.read_model_sequences").fetchone()
    sequence = last["n"]
    changed = 0
    for routing_key, body in events.messages:
        sequence += 1
        event = {**body, "sequence": sequence}
        if routing_key == bus.CONFIG_CHANGED:
            changed += read_models.apply_config_change(conn, event)
        elif routing_key in (bus.HOST_ENROLLED, bus.HOST_CHECKED_OUT, bus.HOST_DELETED):
            changed += read_models.apply_host_event(conn, routing_key, event)
    events.messages.clear()
    return changed


def apply_outbox_events(conn, outbox: str) -> int:
    """Relay by hand: the unpublished events of a service's outbox (`schema.table`), numbered by
    their row ids as OutboxRelay numbers them, to the processor's read models; marks them
    published. Returns how many changed a copy."""
    from mdmscep_common import bus
    from profile_processor import read_models

    rows = conn.execute(f"SELECT id, routing_key, body FROM {outbox} "  # noqa: S608 - test's table
                        "WHERE published_at IS NULL ORDER BY id").fetchall()
    changed = 0
    for row in rows:
        event = {**row["body"], "sequence": row["id"]}
        if row["routing_key"] == bus.CONFIG_CHANGED:
            changed += read_models.apply_config_change(conn, event)
        elif row["routing_key"] in (bus.HOST_ENROLLED, bus.HOST_CHECKED_OUT, bus.HOST_DELETED):
            changed += read_models.apply_host_event(conn, row["routing_key"], event)
    conn.execute(f"UPDATE {outbox} SET published_at = now() WHERE published_at IS NULL")
    return changed
