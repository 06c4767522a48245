"""scep-proxy protocol parsing (no HTTP, no network): proxy ids, PKIOperation messages, CertReps."""

from __future__ import annotations

import base64

import pytest
from asn1crypto import algos, cms, core
from hypothesis import given, settings
from hypothesis import strategies as st

from mdmscep_common.proxy_urls import MalformedId, ProxyId, ca_name_hint
from mdmscep_common.proxy_urls import decode_id as parse_proxy_id
from scep_proxy.scep_protocol import (
    MAX_MESSAGE_BYTES,
    OID_FAIL_INFO,
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    CertRepStatus,
    MalformedMessage,
    MessageTooLarge,
    decode_get_message,
    encode_get_message,
    read_cert_rep,
    scep_request_type,
)

MAC_UDID = "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"
IPHONE_UDID = "00008030-001A2B3C4D5E802E"
IPHONE_OLD_UDID = "a" * 40
PROFILE = "f3c1f0e2-6f1b-4c3e-9a1e-2d7c5b9e8a10"


def scep_message(attributes: list[tuple[str, str]], content_type: str = "signed_data",
                 signers: int = 1) -> bytes:
    """A CMS SignedData shaped like a SCEP message, with the given printable-string attributes.
    The signature is not real: the proxy reads structure only."""
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": cms.CMSAttributeType(oid), "values": [core.PrintableString(v)]})
        for oid, v in attributes])
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"subject_key_identifier": b"\x01" * 20}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
        "signature": b"\x00" * 256,
    })
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data", "content": b"pkcsPKIEnvelope"},
        "signer_infos": [signer] * signers,
    })
    return cms.ContentInfo({"content_type": content_type, "content": signed}).dump()


# --- proxy ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [MAC_UDID, IPHONE_UDID, IPHONE_OLD_UDID])
def test_id_parts(host):
    parsed = parse_proxy_id(f"{host},{PROFILE},Test_SCEP,c0de-_X")
    assert parsed == ProxyId(host, PROFILE, "Test_SCEP", "c0de-_X")


def test_the_code_is_not_in_the_repr():
    assert "s3cretcode" not in repr(parse_proxy_id(f"{MAC_UDID},{PROFILE},CA,s3cretcode"))


@pytest.mark.parametrize("raw", [
    "",
    ",,,",
    f"{MAC_UDID},{PROFILE},Test_SCEP",
    f"{MAC_UDID},{PROFILE},Test_SCEP,S3cretC0de,extra",
    f"{MAC_UDID},{PROFILE},,S3cretC0de",
    f",{PROFILE},Test_SCEP,S3cretC0de",
    f"{MAC_UDID},{PROFILE},Test-SCEP,S3cretC0de",  # CA names have no dash
    f"{MAC_UDID},{PROFILE},Test SCEP,S3cretC0de",
    f"{MAC_UDID},{PROFILE},{'x' * 256},S3cretC0de",
    f"{'A' * 65},{PROFILE},Test_SCEP,S3cretC0de",
    f"host_uuid,{PROFILE},Test_SCEP,S3cretC0de",  # no underscore in a UDID
    f"{MAC_UDID},prof/ile,Test_SCEP,S3cretC0de",
    f"{MAC_UDID},{PROFILE},Test_SCEP,S3cret%2CC0de",
    f"{MAC_UDID},{PROFILE},Test_SCEP,S3cretC0dé",
    f"{MAC_UDID},{PROFILE},Test_SCEP,S3cretC0de{'c' * 257}",
    f"{MAC_UDID}%2C{PROFILE}%2CTest_SCEP%2CS3cretC0de",  # escaped twice: still escaped after decoding
])
def test_malformed_ids(raw):
    with pytest.raises(MalformedId) as caught:
        parse_proxy_id(raw)
    assert "S3cret" not in str(caught.value)


def test_ca_name_hint_only_for_a_wellformed_name():
    assert ca_name_hint(f"{MAC_UDID},{PROFILE},Test_SCEP,") == "Test_SCEP"
    assert ca_name_hint("a,b,<script>,d") is None
    assert ca_name_hint("a,b,c") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_an_id_or_malformed(raw):
    try:
        parsed = parse_proxy_id(raw)
    except MalformedId:
        return
    assert ",".join([parsed.host_uuid, parsed.profile_uuid, parsed.ca_name,
                     parsed.one_time_code]) == raw


# --- GET PKIOperation message ---------------------------------------------------------------

def test_get_message_roundtrip_and_repairs():
    message = bytes(range(256)) * 3
    text = encode_get_message(message)
    assert "+" in text and "/" in text
    assert decode_get_message(text) == message
    assert decode_get_message(text.replace("+", " ")) == message  # an unescaped '+'
    assert decode_get_message(text.rstrip("=")) == message  # padding dropped
    wrapped = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    assert decode_get_message(wrapped) == message  # line breaks


@pytest.mark.parametrize("text", ["not base64!", "abc*", "=====", "a"])
def test_get_message_not_base64(text):
    with pytest.raises(MalformedMessage):
        decode_get_message(text)


def test_get_message_over_the_limit():
    with pytest.raises(MessageTooLarge):
        decode_get_message(encode_get_message(b"\x00" * (MAX_MESSAGE_BYTES + 1)))
    with pytest.raises(MessageTooLarge):
        decode_get_message("A" * (MAX_MESSAGE_BYTES * 2))


# --- PKIOperation requests ------------------------------------------------------------------

@pytest.mark.parametrize("value, name", [("19", "PKCSReq"), ("17", "RenewalReq"),
                                         ("20", "CertPoll"), ("21", "GetCert"), ("22", "GetCRL")])
def test_request_types(value, name):
    assert scep_request_type(scep_message([(OID_MESSAGE_TYPE, value)])) == name


@pytest.mark.parametrize("body", [
    b"",
    b"hello",
    b"\x30\x03\x02\x01\x01",
    base64.b64encode(scep_message([(OID_MESSAGE_TYPE, "19")])),  # base64 where DER belongs
    scep_message([(OID_MESSAGE_TYPE, "19")])[:-10],  # truncated
    scep_message([(OID_MESSAGE_TYPE, "19")]) + b"\x00",  # trailing bytes
    scep_message([("1.2.3.4", "19")]),  # no messageType
    scep_message([(OID_MESSAGE_TYPE, "3")]),  # a CertRep is not a request
    scep_message([(OID_MESSAGE_TYPE, "99")]),
    scep_message([(OID_MESSAGE_TYPE, "19")], signers=0),
    cms.ContentInfo({"content_type": "data", "content": b"x"}).dump(),
])
def test_not_scep_requests(body):
    with pytest.raises(MalformedMessage):
        scep_request_type(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_a_request_or_malformed(body):
    try:
        scep_request_type(body)
    except MalformedMessage:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_requests_never_raise_anything_else(data):
    body = bytearray(scep_message([(OID_MESSAGE_TYPE, "19"), (OID_PKI_STATUS, "0")]))
    for _ in range(data.draw(st.integers(1, 8))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    for parse in (scep_request_type, read_cert_rep):
        try:
            parse(bytes(body))
        except MalformedMessage:
            pass


# --- CertRep answers ------------------------------------------------------------------------

@pytest.mark.parametrize("attributes, expected", [
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "0")], CertRepStatus("SUCCESS", "")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "3")], CertRepStatus("PENDING", "")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "0")],
     CertRepStatus("FAILURE", "badAlg")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "1")],
     CertRepStatus("FAILURE", "badMessageCheck")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "2")],
     CertRepStatus("FAILURE", "badRequest")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "3")],
     CertRepStatus("FAILURE", "badTime")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "4")],
     CertRepStatus("FAILURE", "badCertId")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2")], CertRepStatus("FAILURE", "")),
    ([(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "2"), (OID_FAIL_INFO, "9")],
     CertRepStatus("FAILURE", "")),
])
def test_cert_rep_status(attributes, expected):
    assert read_cert_rep(scep_message(attributes)) == expected


@pytest.mark.parametrize("attributes", [
    [(OID_MESSAGE_TYPE, "19"), (OID_PKI_STATUS, "0")],  # a request, not a CertRep
    [(OID_MESSAGE_TYPE, "3")],  # no pkiStatus
    [(OID_MESSAGE_TYPE, "3"), (OID_PKI_STATUS, "1")],  # 1 is not a pkiStatus
    [(OID_PKI_STATUS, "0")],
])
def test_not_cert_reps(attributes):
    with pytest.raises(MalformedMessage):
        read_cert_rep(scep_message(attributes))
