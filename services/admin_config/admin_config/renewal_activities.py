"""The `renewed_certificates` activity. profile-processor renews certificates near expiry and
announces each reconcile pass that did (`certificates.renewed`, from its outbox); admin-config owns
the activity feed, so its worker records the activity, once per event (admin_config_inbox). The
activity is what the processor wrote itself before: actor `profile-processor`, details
`{hosts, profile_uuids}`.
"""

from __future__ import annotations

import logging
from typing import Any

from mdmscep_common import bus
from mdmscep_common.inbox import ADMIN_CONFIG_INBOX, Inbox

from .store import ActivityStore

log = logging.getLogger(__name__)

RENEWED_CERTIFICATES = "renewed_certificates"
PROCESSOR_ACTOR = "profile-processor"


def renewal_details(body: dict[str, Any]) -> dict[str, Any]:
    """The activity's details from the event; PoisonMessage when it cannot be one."""
    hosts, profile_uuids = body.get("hosts"), body.get("profile_uuids")
    if isinstance(hosts, bool) or not isinstance(hosts, int) or hosts < 1:
        raise bus.PoisonMessage("certificates.renewed without a positive host count")
    if not isinstance(profile_uuids, list) or not profile_uuids or \
            not all(isinstance(uuid, str) and uuid for uuid in profile_uuids):
        raise bus.PoisonMessage("certificates.renewed without its profile UUIDs")
    return {"hosts": hosts, "profile_uuids": profile_uuids}


def record_renewal(db, details: dict[str, Any]) -> None:
    with db.transaction() as conn:
        ActivityStore().record(conn, RENEWED_CERTIFICATES, PROCESSOR_ACTOR, details)
    log.info("activity recorded", extra={"type": RENEWED_CERTIFICATES, "hosts": details["hosts"]})


def certificates_renewed_handler(db):
    """`certificates.renewed` from profile-processor → activity, once per event."""
    inbox = Inbox(db, ADMIN_CONFIG_INBOX)

    def handle(body: dict[str, Any], _delivery: bus.Delivery) -> None:
        details = renewal_details(body)
        inbox.handle(body, lambda tx: record_renewal(tx, details))
    return handle
