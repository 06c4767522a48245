"""What keeps scep-proxy's table small: ca_requests (one row per PKIOperation that reached a CA,
or was refused busy after authorization) is read for the last hour of per-CA statistics only, and
deleted CA_REQUEST_RETENTION_DAYS after it was written. `scep-proxy grpc` prunes it (one process
per replica; replicas skip each other's rows), every PRUNE_INTERVAL, in batches."""

from __future__ import annotations

from mdmscep_common.retention import PeriodicTask, RetentionRule, days, pruning_task


def ca_request_rules(retention_days: float) -> list[RetentionRule]:
    # Found by ca_requests_created_idx (migration 0010); the (ca_name, created_at) index the
    # statistics use cannot serve a condition on created_at alone.
    return [RetentionRule("ca_requests", "created_at < %(cutoff)s", days(retention_days))]


def ca_request_pruning(db, settings) -> PeriodicTask:
    return pruning_task(db, ca_request_rules(settings.ca_request_retention_days),
                        settings.prune_interval, settings.prune_batch_size)
