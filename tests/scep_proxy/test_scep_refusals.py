"""Every refusal ProfileAuthority can give has its HTTP answer in the proxy (one table,
scep_proxy.profile_authority_client.REFUSAL_STATUS)."""

from __future__ import annotations

from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from scep_proxy.errors import Refused
from scep_proxy.profile_authority_client import REFUSAL_STATUS


def test_every_refusal_has_an_http_status():
    refusals = {value for value in ScepRefusal.values() if value != ScepRefusal.SCEP_REFUSAL_UNSPECIFIED}
    assert set(REFUSAL_STATUS) == refusals


def test_the_http_statuses_hosts_see():
    by_name = {ScepRefusal.Name(value).removeprefix("SCEP_REFUSAL_"): status
               for value, status in REFUSAL_STATUS.items()}
    assert by_name == {"UNKNOWN_OPERATION": 400, "UNKNOWN_HOST": 404, "UNKNOWN_PROFILE": 404,
                       "UNKNOWN_CA": 404, "NOT_PENDING": 409, "CODE_UNKNOWN": 403,
                       "CODE_USED": 403, "CODE_EXPIRED": 403, "CODE_SUPERSEDED": 403}
    assert Refused.status == 403  # what a refusal unknown to this proxy is answered with
