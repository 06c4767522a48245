"""Found by the kill -9 scenarios: a fresh mdm-endpoint worker refused genuine Mdm-Signatures with
400 "Mdm-Signature is not valid CMS: ValueError" when hosts' requests arrived at once.

asn1crypto sets up each class lazily on first use without a lock (ValueMap._setup assigns an empty
`_reverse_map` and fills it afterwards; Sequence._setup does the same with `_field_map`); a second
thread arriving in between sees a half-built class. The services now parse under a lock. These
tests widen the window so the race happens every time, and check that the services' paths
are serialized."""

from __future__ import annotations

import plistlib
import threading
import time
import types

import pytest
from asn1crypto import cms, core, x509
from flask import Flask

from mdm_endpoint import views
from mdm_endpoint.identity import IdentityVerifier
from scep_proxy import scep_protocol
from tests.scep_proxy.test_scep_proxy_protocol import scep_message
from tests.support.identity_pki import IdentityCa

THREADS = 8


@pytest.fixture
def slow_version_setup(monkeypatch):
    """x509.Version is set up again on next use, slowly: the window a second thread falls in."""
    def slow_setup(self):
        cls = self.__class__
        if cls._map is None or cls._reverse_map is not None:
            return
        cls._reverse_map = {}
        time.sleep(0.05)
        for key, value in cls._map.items():
            cls._reverse_map[value] = key

    monkeypatch.setattr(core.ValueMap, "_setup", slow_setup)
    monkeypatch.setattr(x509.Version, "_reverse_map", None)
    core._SETUP_CLASSES.pop(x509.Version, None)
    yield
    core._SETUP_CLASSES.pop(x509.Version, None)


def _concurrently(fn, count: int = THREADS) -> list[BaseException | None]:
    barrier = threading.Barrier(count)
    results: list[BaseException | None] = [None] * count

    def run(i):
        barrier.wait()
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_the_race_is_real_without_a_lock(slow_version_setup):
    """asn1crypto itself, many threads at once: some genuine signatures do not parse."""
    import base64

    ca = IdentityCa()
    identity = ca.issue("host")
    headers = [base64.b64decode(identity.sign(plistlib.dumps({"n": i}))) for i in range(THREADS)]
    results = _concurrently(lambda i: cms.ContentInfo.load(headers[i], strict=True).native)
    assert any(r is not None for r in results), "the widened race did not happen"


def test_mdm_endpoint_verifies_one_signature_at_a_time(slow_version_setup):
    ca = IdentityCa()
    identity = ca.issue("host")
    app = Flask("race")
    app.extensions["mdm_endpoint"] = types.SimpleNamespace(
        verifier=IdentityVerifier([ca.certificate]))

    @app.put("/signed")
    def signed():
        views._signed_body()
        return "ok"

    bodies = [plistlib.dumps({"UDID": "X", "Status": "Idle", "n": i}) for i in range(THREADS)]
    headers = [identity.sign(b) for b in bodies]

    def put(i):
        response = app.test_client().put("/signed", data=bodies[i],
                                         headers={"Mdm-Signature": headers[i]})
        assert response.status_code == 200, response.get_data(as_text=True)

    assert _concurrently(put) == [None] * THREADS


def test_scep_proxy_parses_cms_only_under_its_lock(monkeypatch):
    """Every asn1crypto entry point of scep_protocol runs with ASN1_LOCK held."""
    entered = []
    real_load = cms.ContentInfo.load

    def checked_load(cls_or_data, *args, **kwargs):
        entered.append(scep_protocol.ASN1_LOCK.locked())
        return real_load(cls_or_data, *args, **kwargs)

    monkeypatch.setattr(cms.ContentInfo, "load", checked_load)
    request = scep_message([(scep_protocol.OID_MESSAGE_TYPE, "19")])
    rep = scep_message([(scep_protocol.OID_MESSAGE_TYPE, "3"), (scep_protocol.OID_PKI_STATUS, "0")])
    assert scep_protocol.scep_request_type(request) == "PKCSReq"
    assert scep_protocol.read_cert_rep(rep).pki_status == "SUCCESS"
    with pytest.raises(scep_protocol.NoCertificates):
        scep_protocol.parse_ca_certificates(b"\x30\x03\x02\x01\x00", "application/x-x509-ca-ra-cert")
    assert entered and all(entered)


def test_scep_request_type_is_right_in_every_thread():
    request = scep_message([(scep_protocol.OID_MESSAGE_TYPE, "19")])
    core._SETUP_CLASSES.pop(cms.SignerInfo, None)
    core._SETUP_CLASSES.pop(cms.SignedData, None)
    results = _concurrently(lambda _: scep_protocol.scep_request_type(request), 16)
    assert results == [None] * 16
