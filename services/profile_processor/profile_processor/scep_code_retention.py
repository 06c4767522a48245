"""Retention of one-time SCEP codes (scep_codes is this service's table)."""

from __future__ import annotations

from mdmscep_common.retention import RetentionRule, days


def scep_code_rules(retention_days: float) -> list[RetentionRule]:
    """A one-time code is kept `retention_days` after it expired (used codes too: they are dead
    once used, and expire within SCEP_CODE_TTL anyway). A code still valid is never matched:
    its expiry is in the future, and the cutoff in the past."""
    return [RetentionRule("scep_codes", "expires_at < %(cutoff)s", days(retention_days))]
