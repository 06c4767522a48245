"""The services' MDM harness (tests/support/service_fixtures.py: mdm-endpoint's HTTP app and gRPC
Commander, real PostgreSQL and RabbitMQ) for tests outside the service folders (security, e2e),
without a push worker: their hosts are driven by polling, as a device also checks in on its own.

Why no push worker: session fixtures live until the session ends, and every push worker consumes
the one durable push queue; a second one, started here, would take pushes meant for the
integration tests' hosts (and theirs, ours). Importing the fixtures below gives a module its own
instances of them (a second mdm-endpoint on other ports)."""

from __future__ import annotations

import pytest

from tests.support.service_fixtures import (  # noqa: F401 - fixtures re-exported for test modules
    MdmHarness,
    admin_events,
    apns_pki,
    clean_hosts,
    clean_state,
    commander,
    fake_apns,
    identity_ca,
    live_admin,
    live_admin_app,
    mdm_db,
    mdm_relay,
    mdm_server,
    mdm_settings,
    processor_relay,
    push_router,
    start_processor,
)


@pytest.fixture
def mdm(mdm_server, commander, clean_hosts, tmp_path):  # noqa: F811 - fixtures
    """MdmHarness whose hosts are never pushed: `host.poll()` (or `host.connect`) drives them."""
    from hostsim.fleet import Fleet

    fleet = Fleet(mdm_server.url, 0, tmp_path, workers=2)
    yield MdmHarness(mdm_server.url, commander, None, fleet, tmp_path)
    fleet.close()
