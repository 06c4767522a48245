"""`admin-config rotate-key`: re-encrypt every stored secret from SERVER_PRIVATE_KEY_PREVIOUS to
SERVER_PRIVATE_KEY in one transaction (docs/operations.md "Rotating SERVER_PRIVATE_KEY").

Rows are locked while they are re-encrypted, so an edit made meanwhile waits and then sees the new
ciphertext. Nothing else changes: `updated_at` stays, so the processor does not re-send profiles.
If any secret opens with neither key, nothing is written and the command names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdmscep_common.crypto import DecryptionError, SecretBox

from .certificate_authorities import challenge_context


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of SecretBox ciphertexts, with how each row's associated data is made."""

    table: str
    key: str
    column: str
    context_columns: tuple[str, ...]
    context: Callable[[dict[str, Any]], bytes]
    describe: Callable[[dict[str, Any]], str]


# Every secret stored encrypted. A new encrypted column is added here, or rotation misses it.
ENCRYPTED_COLUMNS = (
    EncryptedColumn("certificate_authorities", "id", "challenge_encrypted", ("name",),
                    lambda row: challenge_context(row["name"]),
                    lambda row: f"certificate authority {row['name']} (id {row['id']}) challenge"),
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


def rotate_key(db, current_key: str, previous_key: str, dry_run: bool = False,
               columns: tuple[EncryptedColumn, ...] = ENCRYPTED_COLUMNS) -> RotationReport:
    """Re-encrypt under `current_key` every secret that opens only with `previous_key`."""
    current = SecretBox(current_key)
    previous = SecretBox(previous_key)
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
                    if current.opens_with_current_key(stored, context):
                        report.already_current.append(col.describe(row))
                        continue
                    plaintext = previous.decrypt(stored, context)
                except DecryptionError:
                    report.unreadable.append(col.describe(row))
                    continue
                updates.append((current.encrypt(plaintext, context), row[col.key]))
                report.reencrypted.append(col.describe(row))
            if updates and not dry_run:
                with conn.cursor() as cur:
                    cur.executemany(f"UPDATE {col.table} SET {col.column} = %s "
                                    f"WHERE {col.key} = %s", updates)
        if report.unreadable:
            raise UnreadableSecrets(report)  # leaving the block rolls everything back
    return report
