import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from scep_proxy.scep_protocol import NoCertificates, operation_url, parse_ca_caps, parse_ca_certificates


def _cert(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_operation_url_keeps_existing_query():
    assert operation_url("http://ca/scep", "GetCACaps") == "http://ca/scep?operation=GetCACaps"
    assert operation_url("https://ca/cgi?tenant=a&operation=x", "GetCACert", message="m") == \
        "https://ca/cgi?tenant=a&operation=GetCACert&message=m"


def test_caps_lines():
    assert parse_ca_caps(b"Renewal\r\nSHA-256\n\nAES\n") == ["Renewal", "SHA-256", "AES"]


def test_single_der_certificate():
    cert = _cert("CA")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert parse_ca_certificates(der, "application/x-x509-ca-cert") == [cert]


def test_ca_and_ra_chain_in_pkcs7():
    ca, ra = _cert("CA"), _cert("RA")
    bundle = pkcs7.serialize_certificates([ca, ra], serialization.Encoding.DER)
    # A certificates-only PKCS#7 is a SET: order is not meaningful.
    assert set(parse_ca_certificates(bundle, "application/x-x509-ca-ra-cert; charset=binary")) == {ca, ra}
    assert set(parse_ca_certificates(bundle, "")) == {ca, ra}


@pytest.mark.parametrize("body, ctype", [(b"", "application/x-x509-ca-cert"),
                                         (b"<html></html>", "text/html"),
                                         (b"\x30\x03\x02\x01\x01", "application/x-x509-ca-ra-cert")])
def test_garbage_has_no_certificates(body, ctype):
    with pytest.raises(NoCertificates):
        parse_ca_certificates(body, ctype)
