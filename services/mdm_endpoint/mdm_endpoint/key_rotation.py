"""`mdm-endpoint rotate-key`: bring every command payload in `commands` under SERVER_PRIVATE_KEY in
the current format (docs/operations.md "Rotating SERVER_PRIVATE_KEY"): payloads sealed under
SERVER_PRIVATE_KEY_PREVIOUS or in the legacy format are re-sealed, payloads stored in clear by a
version before payloads were sealed are sealed.

The table can be large (finished commands are kept COMMAND_RETENTION_DAYS) and hosts use it all
the time, so it goes in pages of PAGE_ROWS, each its own short transaction. A page locks its rows
with SKIP LOCKED: the rotation never waits for a check-in (so the two cannot deadlock); a row a
check-in holds at that moment is done in a later round. A payload never changes after it is
queued, so re-sealing it concurrently with a check-in changes nothing the host sees.

A queued payload that opens with neither key is reported, not fatal: when its host asks for it,
it is closed as an error and the processor sends what it carried again (command_payloads).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from mdmscep_common.crypto import DecryptionError, SecretBox

from .command_payloads import open_payload, payload_context, seal_payload

PAGE_ROWS = 500
ROUNDS = 5  # for rows a check-in held each time the rotation came to them
QUEUED = ("queued", "not_now")


@dataclass
class CommandRotationReport:
    resealed: int = 0          # from the previous key or the legacy format
    sealed: int = 0            # stored in clear before payloads were sealed
    already_current: int = 0
    unreadable_queued: list[str] = field(default_factory=list)  # command UUIDs
    unreadable_finished: int = 0
    busy: list[str] = field(default_factory=list)  # held by check-ins in every round

    @property
    def changed(self) -> int:
        return self.resealed + self.sealed


def rotate_command_payloads(db, secrets: SecretBox, dry_run: bool = False,
                            page_rows: int = PAGE_ROWS) -> CommandRotationReport:
    report = CommandRotationReport()
    busy = _rotate_pages(db, secrets, report, dry_run, page_rows)
    for _ in range(ROUNDS - 1):
        if not busy:
            break
        time.sleep(0.2)  # let the check-ins holding them commit
        busy = _rotate(db, secrets, report, dry_run, sorted(busy))
    report.busy = sorted(busy)
    return report


def _rotate_pages(db, secrets, report, dry_run, page_rows) -> set[str]:
    after, busy = "", set()
    while True:
        with db.transaction() as conn:
            page = [r["command_uuid"] for r in conn.execute(
                "SELECT command_uuid FROM commands WHERE command_uuid > %s "
                "ORDER BY command_uuid LIMIT %s", (after, page_rows)).fetchall()]
        if not page:
            return busy
        after = page[-1]
        busy |= _rotate(db, secrets, report, dry_run, page)


def _rotate(db, secrets: SecretBox, report: CommandRotationReport, dry_run: bool,
            command_uuids: list[str]) -> set[str]:
    """Rotate these rows (those still there); returns the ones a check-in held."""
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT command_uuid, host_uuid, status, payload FROM commands "
            "WHERE command_uuid = ANY(%s) FOR UPDATE SKIP LOCKED", (command_uuids,)).fetchall()
        updates = []
        for row in rows:
            host, command_uuid, stored = row["host_uuid"], row["command_uuid"], bytes(row["payload"])
            if SecretBox.is_sealed(stored):
                try:
                    if secrets.opens_with_current_key(stored, payload_context(host, command_uuid)):
                        report.already_current += 1
                        continue
                    payload = open_payload(secrets, host, command_uuid, stored)
                except DecryptionError:
                    if row["status"] in QUEUED:
                        report.unreadable_queued.append(command_uuid)
                    else:
                        report.unreadable_finished += 1
                    continue
                report.resealed += 1
            else:
                payload = stored
                report.sealed += 1
            updates.append((seal_payload(secrets, host, command_uuid, payload), command_uuid))
        if updates and not dry_run:
            conn.execute("UPDATE commands c SET payload = u.payload "
                         "FROM unnest(%b::bytea[], %b::text[]) AS u(payload, command_uuid) "
                         "WHERE c.command_uuid = u.command_uuid",
                         ([u[0] for u in updates], [u[1] for u in updates]))
        done = {r["command_uuid"] for r in rows}
    if len(done) == len(command_uuids):
        return set()
    # Rows gone meanwhile (pruned, or cleared by a re-enrollment) need nothing more.
    with db.transaction() as conn:
        still_there = {r["command_uuid"] for r in conn.execute(
            "SELECT command_uuid FROM commands WHERE command_uuid = ANY(%s)",
            ([c for c in command_uuids if c not in done],)).fetchall()}
    return still_there


def main(settings, dry_run: bool) -> int:
    """The command line: prints what it did; exit status 1 when rows were busy every time."""
    from mdmscep_common.db import Database
    from mdmscep_common.logs import configure_logging

    configure_logging("mdm-endpoint-cli", settings.secret_values())
    db = Database(settings.database_url, max_size=2, name="mdm-endpoint-cli").open()
    try:
        report = rotate_command_payloads(db, SecretBox.from_settings(settings), dry_run=dry_run)
    finally:
        db.close()
    verb = "would re-encrypt" if dry_run else "re-encrypted"
    print(f"{verb} {report.changed} command payload(s) under SERVER_PRIVATE_KEY "
          f"({report.resealed} from the previous key or the legacy format, {report.sealed} "
          f"stored in clear); {report.already_current} already used it")
    if report.unreadable_queued:
        print(f"{len(report.unreadable_queued)} queued command(s) open with neither key: each is "
              "closed as an error when its host asks for it, and sent again by the processor "
              f"({', '.join(report.unreadable_queued[:20])})", file=sys.stderr)
    if report.unreadable_finished:
        print(f"{report.unreadable_finished} finished command(s) open with neither key (never "
              "sent again; deleted after COMMAND_RETENTION_DAYS)", file=sys.stderr)
    if report.busy:
        print(f"{len(report.busy)} command(s) were in use by check-ins each time: run "
              "rotate-key again", file=sys.stderr)
        return 1
    return 0
