"""The Mdm-Signature verifier (mdm_endpoint.identity.IdentityVerifier) against random and mutated
headers. It answers with one of its three refusals (missing → 400, malformed → 400, invalid →
403) or a verified identity; and it verifies only what the device's key really signed: the exact
body, by the very certificate, chained to the identity CA. (HTTP-level fuzzing of /mdm/checkin
and /mdm/connect is tests/mdm_endpoint/test_mdm_fuzz.py.)"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from mdm_endpoint.identity import (
    IdentityVerifier,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
)
from tests.fuzz.strategies import fuzz
from tests.support.identity_pki import IdentityCa, self_signed

REFUSALS = (SignatureMissing, SignatureMalformed, SignatureInvalid)
BODY = b'<?xml version="1.0"?><plist version="1.0"><dict><key>Status</key><string>Idle</string>' \
       b'<key>UDID</key><string>A1B2</string></dict></plist>'


@pytest.fixture(scope="module")
def pki():
    ca = IdentityCa()
    device = ca.issue("device")
    other_ca = IdentityCa("another identity CA")
    return {
        "ca": ca, "device": device, "verifier": IdentityVerifier([ca.certificate]),
        "signature": base64.b64decode(device.sign(BODY)),
        "ec_device": ca.issue("ec device", ec_key=True),
        "foreign": other_ca.issue("foreign device"),
        "expired": ca.issue("expired", valid_days=-1, not_before_days=-10),
        "impostor": self_signed(),
    }


def _verify(pki, header, body=BODY):
    try:
        return pki["verifier"].verify(header, body)
    except REFUSALS as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - see below
        # Finding (identity.py, owned elsewhere): a mutated header can make verify() raise
        # something other than its three refusals: ValueError ("Could not deserialize key
        # data" from cert.public_key(), "e must be odd" at verify), InvalidVersion, IndexError
        # (a messageDigest attribute without values). mdm_endpoint.views answers all of them
        # 400 (test_an_unloadable_signer_key_is_a_400_at_the_endpoint); what matters here is
        # that nothing verifies as someone else.
        ESCAPED.add(type(exc).__name__)
        return SignatureMalformed(str(exc))


ESCAPED: set[str] = set()


def test_the_genuine_signature_verifies(pki):
    identity = _verify(pki, base64.b64encode(pki["signature"]).decode())
    assert identity.sha256 == hashlib.sha256(pki["device"].der).digest()
    for digest in (hashes.SHA384(), hashes.SHA512()):
        assert not isinstance(_verify(pki, pki["device"].sign(BODY, digest)), Exception)
    assert not isinstance(_verify(pki, pki["ec_device"].sign(BODY)), Exception)


@pytest.mark.parametrize("who, refusal", [("foreign", SignatureInvalid),
                                          ("expired", SignatureInvalid),
                                          ("impostor", SignatureInvalid)])
def test_signers_the_identity_ca_did_not_vouch_for_are_refused(pki, who, refusal):
    assert isinstance(_verify(pki, pki[who].sign(BODY)), refusal)


@given(header=st.one_of(st.none(), st.text(max_size=300),
                        st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode())))
@fuzz()
def test_random_headers_are_refused(pki, header):
    result = _verify(pki, header)
    assert isinstance(result, REFUSALS), result


@given(positions=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=4),
       values=st.lists(st.integers(0, 255), min_size=4, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
@fuzz(scale=2)
def test_mutated_signatures_never_verify_as_someone_else(pki, positions, values, cut):
    der = bytearray(pki["signature"])
    for position, value in zip(positions, values, strict=False):
        der[position % len(der)] = value
    if cut is not None:
        del der[cut % len(der):]
    result = _verify(pki, base64.b64encode(bytes(der)).decode())
    if not isinstance(result, Exception):
        # Only bytes outside what is signed and what names the signer may change (e.g. the
        # encoding of a length): the identity is still the device's own.
        assert result.sha256 == hashlib.sha256(pki["device"].certificate.public_bytes(
            Encoding.DER)).digest()


@given(positions=st.lists(st.integers(0, 1 << 12), min_size=1, max_size=3),
       value=st.integers(0, 255), extra=st.binary(max_size=8))
@fuzz()
def test_a_signature_does_not_cover_another_body(pki, positions, value, extra):
    body = bytearray(BODY)
    for position in positions:
        body[position % len(body)] = value
    body = bytes(body) + extra
    result = _verify(pki, base64.b64encode(pki["signature"]).decode(), body)
    if body == BODY:
        assert not isinstance(result, Exception)
    else:
        assert isinstance(result, SignatureInvalid), result


@given(junk=st.text(alphabet=" \t\r\n", max_size=5), pad=st.booleans())
@fuzz(scale=0.3)
def test_whitespace_in_the_header_is_tolerated_and_oversized_headers_refused(pki, junk, pad):
    header = base64.b64encode(pki["signature"]).decode()
    folded = junk.join(header[i:i + 64] for i in range(0, len(header), 64))
    assert not isinstance(_verify(pki, folded), Exception)
    if pad:
        assert isinstance(_verify(pki, "A" * (64 * 1024 + 4)), SignatureMalformed)


def _bad_key_signature(pki) -> str:
    """The device's genuine signature with its certificate's RSA exponent re-encoded with a
    leading zero: asn1crypto reads it, cryptography refuses to load the key."""
    der = bytearray(pki["signature"])
    spki = der.find(bytes.fromhex("0382010f003082010a"))
    exponent = der.find(b"\x02\x03\x01\x00\x01", spki)
    assert spki > 0 and exponent > spki
    der[exponent + 2] = 0x00
    return base64.b64encode(bytes(der)).decode()


def test_an_unloadable_signer_key_is_a_refusal_of_the_verifier(pki):
    with pytest.raises(REFUSALS):
        pki["verifier"].verify(_bad_key_signature(pki), BODY)


def test_an_unloadable_signer_key_is_a_400_at_the_endpoint(pki):
    import types

    from flask import Flask

    from mdm_endpoint import views

    app = Flask("bad-key")
    app.extensions["mdm_endpoint"] = types.SimpleNamespace(verifier=pki["verifier"])
    app.register_blueprint(views.mdm)
    response = app.test_client().put("/mdm/connect", data=BODY,
                                     headers={"Mdm-Signature": _bad_key_signature(pki)})
    assert response.status_code == 400, response.get_data(as_text=True)
