"""SCEP protocol pieces (RFC 8894) with no HTTP or database in them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

CA_CERT_TYPE = "application/x-x509-ca-cert"
CA_RA_CERT_TYPE = "application/x-x509-ca-ra-cert"


class NoCertificates(ValueError):
    """A GetCACert answer held no certificate we could read."""


def operation_url(base_url: str, operation: str, **params: str) -> str:
    """The CA's URL with `operation` (and other parameters) added to any query it already has."""
    parts = urlsplit(base_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("operation", "message")]
    query.append(("operation", operation))
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse_ca_caps(body: bytes) -> list[str]:
    """GetCACaps: one capability per line (RFC 8894 §3.5.2); unknown ones are kept as sent."""
    text = body.decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _certs_only_pkcs7(body: bytes) -> list[x509.Certificate]:
    try:
        return list(pkcs7.load_der_pkcs7_certificates(body))
    except ValueError:
        pass
    # Some CAs wrap the degenerate SignedData oddly; asn1crypto is more forgiving.
    info = cms.ContentInfo.load(body)
    signed = info["content"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]


def parse_ca_certificates(body: bytes, content_type: str) -> list[x509.Certificate]:
    """GetCACert (RFC 8894 §4.2.1): one DER certificate, or a certificates-only PKCS#7 of CA and
    RA certificates. The content type decides; an unlabelled body is tried both ways."""
    media = content_type.split(";", 1)[0].strip().lower()
    attempts = []
    if media == CA_CERT_TYPE:
        attempts = ["der", "pem"]
    elif media == CA_RA_CERT_TYPE:
        attempts = ["pkcs7"]
    else:
        attempts = ["der", "pkcs7", "pem"]
    for kind in attempts:
        try:
            if kind == "der":
                return [x509.load_der_x509_certificate(body)]
            if kind == "pem":
                certs = x509.load_pem_x509_certificates(body)
                if certs:
                    return list(certs)
            if kind == "pkcs7":
                certs = _certs_only_pkcs7(body)
                if certs:
                    return certs
        except (ValueError, TypeError, KeyError):
            continue
    raise NoCertificates(f"GetCACert answer ({media or 'no content type'}) holds no certificate")
