"""`admin-config rotate-key`: re-encrypt every stored secret of admin-config's tables that does not
yet use SERVER_PRIVATE_KEY in the current format (docs/operations.md "Rotating SERVER_PRIVATE_KEY"),
in one transaction: secrets under SERVER_PRIVATE_KEY_PREVIOUS, and secrets in the legacy format
(mdmscep_common.crypto, 0x01) under either key, which is why it also runs without a previous key.
Queued MDM commands are mdm-endpoint's: `mdm-endpoint rotate-key`.

Rows are locked while they are re-encrypted, so an edit made meanwhile waits and then sees the new
ciphertext. Nothing else changes: `updated_at` stays, so the processor does not re-send profiles.
Each re-encrypted CA is announced (config.changed, through the outbox in the same transaction): the
processor's copy then holds the new ciphertext before the previous key is retired.
If any secret opens with neither key, nothing is written and the command names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdmscep_common.crypto import DecryptionError, SecretBox
from mdmscep_common.outbox import ADMIN_CONFIG_OUTBOX, Events, Outbox

from .certificate_authorities import announce_ca, challenge_context
from .store import CertificateAuthorityStore


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of SecretBox ciphertexts, with how each row's associated data is made."""

    table: str
    key: str
    column: str
    context_columns: tuple[str, ...]
    context: Callable[[dict[str, Any]], bytes]
    describe: Callable[[dict[str, Any]], str]
    # Tells other services that hold a copy of the row (conn, events, key value).
    announce: Callable[[Any, Events, Any], None] | None = None


def _announce_ca(conn, events: Events, ca_id: int) -> None:
    announce_ca(events, conn, "edited", CertificateAuthorityStore().get(conn, ca_id),
                resend=False)


# Every secret admin-config stores encrypted (a new encrypted column is added here, or rotation
# misses it). Queued command payloads are mdm-endpoint's: mdm_endpoint.key_rotation.
ENCRYPTED_COLUMNS = (
    EncryptedColumn("certificate_authorities", "id", "challenge_encrypted", ("name",),
                    lambda row: challenge_context(row["name"]),
                    lambda row: f"certificate authority {row['name']} (id {row['id']}) challenge",
                    _announce_ca),
)


@dataclass
class RotationReport:
    reencrypted: list[str] = field(default_factory=list)
    already_current: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


class UnreadableSecrets(Exception):
    """Some secrets open with neither key; nothing was changed."""

    def __init__(self, report: RotationReport):
        super().__init__(", ".join(report.unreadable))
        self.report = report


def rotate_key(db, current_key: str, previous_key: str | None, dry_run: bool = False,
               columns: tuple[EncryptedColumn, ...] = ENCRYPTED_COLUMNS,
               events: Events | None = None) -> RotationReport:
    """Re-encrypt under `current_key`, in the current format, every secret that does not already
    open with it in that format but opens with `previous_key` or in the legacy format."""
    box = SecretBox(current_key, previous_key)
    events = events if events is not None else Outbox(ADMIN_CONFIG_OUTBOX)
    report = RotationReport()
    with db.transaction() as conn:
        for col in columns:
            selected = ", ".join(dict.fromkeys((col.key, *col.context_columns, col.column)))
            rows = conn.execute(f"SELECT {selected} FROM {col.table} ORDER BY {col.key} "
                                "FOR UPDATE").fetchall()
            updates = []
            for row in rows:
                context, stored = col.context(row), bytes(row[col.column])
                try:
                    if box.opens_with_current_key(stored, context):
                        report.already_current.append(col.describe(row))
                        continue
                    plaintext = box.open(stored, context)
                except DecryptionError:
                    report.unreadable.append(col.describe(row))
                    continue
                updates.append((box.seal(plaintext, context), row[col.key]))
                report.reencrypted.append(col.describe(row))
            if updates and not dry_run:
                with conn.cursor() as cur:
                    cur.executemany(f"UPDATE {col.table} SET {col.column} = %s "
                                    f"WHERE {col.key} = %s", updates)
                if col.announce is not None:
                    for _, key in updates:
                        col.announce(conn, events, key)
        if report.unreadable:
            raise UnreadableSecrets(report)  # leaving the block rolls everything back
    return report
