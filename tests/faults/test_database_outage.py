"""While PostgreSQL is unreachable, the services answer "retry later", never 500.

Found by the PostgreSQL restart scenario: mdm-endpoint answered 500 with an "unhandled error"
traceback for every host request, and scep-proxy answered a PKIOperation with 500 when the
fleet-wide per-CA limit could not be read. Both now answer 503 with Retry-After: the Mac tries
again, and a PKIOperation refused this way keeps its one-time code."""

from __future__ import annotations

import contextlib
import plistlib

import psycopg_pool
import pytest

from mdm_endpoint.app import create_app
from mdm_endpoint.identity import IdentityVerifier
from mdmscep_common.health import HealthChecks
from scep_proxy.errors import Busy
from scep_proxy.limits import FleetCaLimiter
from tests.conftest import SERVER_PRIVATE_KEY
from tests.support.identity_pki import IdentityCa
from tests.support.ports import free_port
from tests.support.recording_publisher import RecordingPublisher
from tests.support.settings import load_settings


@pytest.fixture
def unreachable_dsn():
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"


class DownDatabase:
    """What the pool raises while PostgreSQL restarts (PoolTimeout is an OperationalError)."""

    @contextlib.contextmanager
    def transaction(self):
        raise psycopg_pool.PoolTimeout("couldn't get a connection after 10.00 sec")
        yield  # pragma: no cover


def test_the_mdm_endpoint_answers_503_while_its_database_is_down():
    ca = IdentityCa()
    identity = ca.issue("host")
    app = create_app(load_settings({"SERVER_PRIVATE_KEY": SERVER_PRIVATE_KEY}), DownDatabase(),
                     RecordingPublisher(), HealthChecks({}),
                     verifier=IdentityVerifier([ca.certificate]))
    body = plistlib.dumps({"Status": "Idle", "UDID": "A1B2"})
    answer = app.test_client().put("/mdm/connect", data=body,
                                   headers={"Mdm-Signature": identity.sign(body)})
    assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
    assert "retry later" in answer.get_data(as_text=True)


def test_the_fleet_ca_limit_answers_busy_while_the_database_is_down(unreachable_dsn):
    limiter = FleetCaLimiter(unreachable_dsn, 4, 0.5, max_connections=2)
    try:
        with pytest.raises(Busy) as busy, limiter.slot("Test_SCEP", 4):
            pass
    finally:
        limiter.close()
    assert busy.value.status == 503 and busy.value.retry_after
