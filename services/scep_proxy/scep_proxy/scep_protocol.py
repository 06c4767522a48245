"""SCEP protocol pieces (RFC 8894) with no HTTP or database in them."""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

CA_CERT_TYPE = "application/x-x509-ca-cert"
CA_RA_CERT_TYPE = "application/x-x509-ca-ra-cert"


# asn1crypto sets each class up lazily on first use (Sequence._setup, ValueMap._setup) without a
# lock: two threads parsing a kind of structure for the first time at once can see a half-built
# class and fail with ValueError ("... value, v1, is not present in the _map"), so a well-formed
# message would be refused. Every asn1crypto parse in this process goes through this lock; the
# parsing is pure Python (it holds the GIL anyway), so the lock costs next to nothing.
ASN1_LOCK = threading.Lock()


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
    with ASN1_LOCK:
        info = cms.ContentInfo.load(body)
        signed = info["content"]
        ders = [c.chosen.dump() for c in signed["certificates"]]
    return [x509.load_der_x509_certificate(der) for der in ders]


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


# --- The proxy's side: PKIOperation messages and CertRep answers (ids: mdmscep_common.proxy_urls).

GET_CA_CAPS = "GetCACaps"
GET_CA_CERT = "GetCACert"
PKI_OPERATION = "PKIOperation"
OPERATIONS = (GET_CA_CAPS, GET_CA_CERT, PKI_OPERATION)

PKI_MESSAGE_TYPE = "application/x-pki-message"
MAX_MESSAGE_BYTES = 2 << 20  # a body over 2 MiB gets 413 (README.md "SCEP proxy")
# Base64 of MAX_MESSAGE_BYTES, plus slack for line breaks some clients put in.
MAX_GET_MESSAGE_CHARS = (MAX_MESSAGE_BYTES + 2) // 3 * 4 + 4096

# SCEP authenticated attributes (RFC 8894 §3.2.1.2).
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
CERT_REP = "3"
REQUEST_MESSAGE_TYPES = {"17": "RenewalReq", "19": "PKCSReq", "20": "CertPoll",
                         "21": "GetCert", "22": "GetCRL"}
PKI_STATUSES = {"0": "SUCCESS", "2": "FAILURE", "3": "PENDING"}
FAIL_INFOS = {"0": "badAlg", "1": "badMessageCheck", "2": "badRequest", "3": "badTime",
              "4": "badCertId"}


class MalformedMessage(ValueError):
    """A PKIOperation message or CertRep is not a well-formed SCEP message."""


class MessageTooLarge(ValueError):
    """A PKIOperation message is over MAX_MESSAGE_BYTES."""


def decode_get_message(value: str) -> bytes:
    """The `message` parameter of a GET PKIOperation: standard base64, already percent-decoded.

    A `+` the client forgot to escape arrives as a space, and some clients wrap lines or drop
    the padding; all three are repaired rather than refused."""
    if len(value) > MAX_GET_MESSAGE_CHARS:
        raise MessageTooLarge("the PKIOperation message is over 2 MiB")
    text = "".join(value.replace(" ", "+").split())
    text += "=" * (-len(text) % 4)
    try:
        message = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("the PKIOperation message is not base64") from None
    if len(message) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge("the PKIOperation message is over 2 MiB")
    return message


def encode_get_message(message: bytes) -> str:
    return base64.b64encode(message).decode("ascii")


def _signed_attribute(body: bytes, oids: tuple[str, ...]) -> dict[str, str]:
    """Printable-string values of the first signer's authenticated attributes `oids`.

    Only the structure is read; the signature is the CA's business (it has the keys)."""
    if not body:
        raise MalformedMessage("the message is empty")
    with ASN1_LOCK:
        return _signed_attribute_unlocked(body, oids)


def _signed_attribute_unlocked(body: bytes, oids: tuple[str, ...]) -> dict[str, str]:
    try:
        info = cms.ContentInfo.load(body, strict=True)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("the message is not CMS SignedData")
        signers = info["content"]["signer_infos"]
        if len(signers) == 0:
            raise MalformedMessage("the SignedData has no signer")
        found: dict[str, str] = {}
        for attribute in signers[0]["signed_attrs"]:
            oid = attribute["type"].dotted
            if oid in oids and oid not in found and len(attribute["values"]) > 0:
                value = attribute["values"][0].native
                if isinstance(value, bytes):
                    value = value.decode("ascii")
                if isinstance(value, str):
                    found[oid] = value
        return found
    except MalformedMessage:
        raise
    except Exception:  # noqa: BLE001 - asn1crypto parses lazily and raises many types on garbage
        raise MalformedMessage("the message is not a well-formed CMS SignedData") from None


def scep_request_type(body: bytes) -> str:
    """Check that `body` is a SCEP request (CMS SignedData whose signer carries a request
    messageType) and return that type's name, e.g. `PKCSReq`."""
    message_type = _signed_attribute(body, (OID_MESSAGE_TYPE,)).get(OID_MESSAGE_TYPE)
    if message_type is None:
        raise MalformedMessage("the SignedData carries no SCEP messageType")
    name = REQUEST_MESSAGE_TYPES.get(message_type.strip())
    if name is None:
        raise MalformedMessage("the SCEP messageType is not a request")
    return name


@dataclass(frozen=True)
class CertRepStatus:
    pki_status: str  # SUCCESS, FAILURE or PENDING
    fail_info: str  # badAlg … badCertId when FAILURE, else ""


def read_cert_rep(body: bytes) -> CertRepStatus:
    """pkiStatus and failInfo of a CA's CertRep (RFC 8894 §3.3.2)."""
    values = _signed_attribute(body, (OID_MESSAGE_TYPE, OID_PKI_STATUS, OID_FAIL_INFO))
    if values.get(OID_MESSAGE_TYPE, "").strip() != CERT_REP:
        raise MalformedMessage("the answer is not a CertRep")
    status = PKI_STATUSES.get(values.get(OID_PKI_STATUS, "").strip())
    if status is None:
        raise MalformedMessage("the CertRep has no known pkiStatus")
    fail_info = ""
    if status == "FAILURE":
        fail_info = FAIL_INFOS.get(values.get(OID_FAIL_INFO, "").strip(), "")
    return CertRepStatus(status, fail_info)
