"""The stack's durable work queues, each named and bound once. Each is consumed by one service
(named below), which declares it when it starts; this module is shared because others need the
same names: `mdmscep-dlq` inspects all of them, and mdm-endpoint and profile-processor declare
admin-config's queue before they first publish to it (docs/operations.md "Dead letters and
health").

scep-proxy's per-process `config.changed` queues are no work queues: they belong to
scep_proxy/config_events.py.
"""

from __future__ import annotations

from kombu import Queue

from . import bus

# profile-processor: everything that can change what a host should have or what it holds.
PROFILE_PROCESSOR_EVENTS = "profile_processor.events"
# mdm-endpoint's push worker: hosts to wake through APNs.
MDM_ENDPOINT_PUSH_REQUESTED = "mdm_endpoint.push_requested"
# admin-config: what other services report for the activity feed (credentials about to expire,
# certificates renewed).
ADMIN_CONFIG_EVENTS = "admin_config.events"

ALL = (PROFILE_PROCESSOR_EVENTS, MDM_ENDPOINT_PUSH_REQUESTED, ADMIN_CONFIG_EVENTS)


def profile_processor_events() -> Queue:
    return bus.durable_queue(PROFILE_PROCESSOR_EVENTS, [
        bus.CONFIG_CHANGED, bus.HOST_ENROLLED, bus.HOST_CHECKED_OUT, bus.HOST_DELETED,
        bus.HOST_FACTS_CHANGED, bus.COMMAND_RESULT, bus.SCEP_RESULT, bus.DELIVERY_RESEND])


def mdm_endpoint_push_requested() -> Queue:
    return bus.durable_queue(MDM_ENDPOINT_PUSH_REQUESTED, [bus.PUSH_REQUESTED])


def admin_config_events() -> Queue:
    return bus.durable_queue(ADMIN_CONFIG_EVENTS, [bus.CREDENTIAL_EXPIRING,
                                                   bus.CERTIFICATES_RENEWED])
