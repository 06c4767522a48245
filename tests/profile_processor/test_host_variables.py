"""Fleet's host variables ($FLEET_VAR_HOST_HARDWARE_SERIAL, $FLEET_VAR_HOST_UUID,
$FLEET_VAR_HOST_PLATFORM) rendered with each host's own values, and a fresh copy sent when a
fact a delivered profile reads changes (a DeviceInformation answer → host.facts_changed → the
processor re-sends). Real mdm-endpoint, processor, PostgreSQL, RabbitMQ and simulated hosts."""

from __future__ import annotations

import plistlib
import uuid

from mdm_endpoint.host_facts import FactRefresh, FactRequests
from mdm_endpoint.store import CommandStore
from mdmscep_common.crypto import SecretBox
from mdmscep_common.outbox import MDM_ENDPOINT_OUTBOX, Outbox
from tests.admin_config.test_configuration_profiles import upload
from tests.conftest import SERVER_PRIVATE_KEY
from tests.profile_processor.test_profile_delivery import installs, wait_status
from tests.support.waiting import wait_for


def _profile() -> bytes:
    return plistlib.dumps({
        "PayloadType": "Configuration", "PayloadIdentifier": f"com.example.host-vars.{uuid.uuid4()}",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadVersion": 1,
        "PayloadContent": [{
            "PayloadType": "com.apple.ManagedClient.preferences",
            "PayloadIdentifier": "com.example.host-vars.prefs", "PayloadVersion": 1,
            "PayloadUUID": str(uuid.uuid4()).upper(),
            "Serial": "$FLEET_VAR_HOST_HARDWARE_SERIAL", "Udid": "${FLEET_VAR_HOST_UUID}",
            "Platform": "$FLEET_VAR_HOST_PLATFORM"}]})


def _values(command) -> dict[str, str]:
    payload = plistlib.loads(command["Command"]["Payload"])["PayloadContent"][0]
    return {key: payload[key] for key in ("Serial", "Udid", "Platform")}


def test_host_variables_carry_each_hosts_values_and_follow_its_facts(mdm, mdm_db, live_admin,
                                                                      start_processor):
    start_processor()
    mac = mdm.new_host(model="Mac15,3")
    phone = mdm.new_host(model="iPhone16,1", platform="iOS")
    response = upload(live_admin, _profile())
    assert response.status_code == 200, response.json
    profile_uuid = response.json["profile_uuid"]
    for host, platform in ((mac, "macos"), (phone, "ios")):
        wait_status(live_admin, host, profile_uuid, "verified")
        [command] = installs(host)
        assert _values(command) == {"Serial": host.serial_number, "Udid": host.udid,
                                    "Platform": platform}
    # The Mac's logic board is replaced: its next DeviceInformation answer says a new serial.
    mac.serial_number = "C02NEWBOARD1"
    with mdm_db.transaction() as conn:
        conn.execute("UPDATE hosts SET facts_requested_at = now() - interval '2 days' "
                     "WHERE uuid = %s", (mac.udid,))
    FactRefresh(mdm_db, FactRequests(CommandStore(), Outbox(MDM_ENDPOINT_OUTBOX),
                                     SecretBox(SERVER_PRIVATE_KEY)), 86400).run_once()
    wait_for(lambda: len(installs(mac)) == 2, 30, "a fresh copy for the new serial")
    assert _values(installs(mac)[-1])["Serial"] == "C02NEWBOARD1"
    wait_status(live_admin, mac, profile_uuid, "verified")
    assert len(installs(phone)) == 1  # its facts did not change
