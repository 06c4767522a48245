"""The config.changed events of what scopes a profile to hosts: each host whose team changed
(kind host_team) and each label added, edited or deleted (kind label), in the shapes of
mdmscep_common.config_events. Each is added after its row changed (so locked), in the transaction
of the change: the outbox numbers one row's events in the order of its changes."""

from __future__ import annotations

from typing import Any

from mdmscep_common import bus, config_events
from mdmscep_common.outbox import Events


def announce_host_teams(events: Events, conn, host_uuids: list[str], team_id: int | None) -> None:
    """One event per host now in team `team_id` (None: in none)."""
    for host_uuid in host_uuids:
        events.add(conn, bus.CONFIG_CHANGED,
                   {"kind": config_events.HOST_TEAM, "action": "transferred",
                    "host_uuid": host_uuid,
                    "host_team": config_events.host_team_state(host_uuid, team_id)})


def announce_label(events: Events, conn, action: str, label_id: int,
                   row: dict[str, Any] | None) -> None:
    """The label as committed (`row` from LabelStore.get; None once deleted)."""
    events.add(conn, bus.CONFIG_CHANGED, {
        "kind": config_events.LABEL, "action": action, "id": label_id,
        "label": None if row is None else config_events.label_state(
            row["id"], row["name"], row["criteria"], list(row["hosts"]))})
