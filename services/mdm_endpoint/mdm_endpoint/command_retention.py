"""Retention of finished commands (commands is this service's table)."""

from __future__ import annotations

from mdmscep_common.retention import RetentionRule, days

FINISHED_STATUSES = ("acknowledged", "error", "command_format_error")


def command_rules(retention_days: float) -> list[RetentionRule]:
    """Finished commands (and their results) `retention_days` after the host answered, and
    commands replaced before they were sent, `retention_days` after they were queued. A queued,
    sent-but-unanswered or NotNow'd command never matches."""
    statuses = ", ".join(f"'{s}'" for s in FINISHED_STATUSES)
    return [
        RetentionRule("commands", f"status IN ({statuses}) AND completed_at < %(cutoff)s",
                      days(retention_days)),
        RetentionRule("commands", "status = 'replaced' AND created_at < %(cutoff)s",
                      days(retention_days), name="commands_replaced"),
    ]
