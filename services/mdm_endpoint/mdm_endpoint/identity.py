"""Device identity: verify `Mdm-Signature` (base64 detached CMS SignedData over the exact body)
and that its signer chains to the identity CA(s) in MDM_IDENTITY_CA_CERTS.

asn1crypto parses the CMS structure; cryptography does the signature math (it has no CMS verify).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

MAX_SIGNATURE_HEADER_CHARS = 64 * 1024
MAX_CHAIN_DEPTH = 4

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
           "sha512": hashes.SHA512}


class SignatureMissing(Exception):
    """No Mdm-Signature header (400)."""


class SignatureMalformed(Exception):
    """The header is not a base64 CMS SignedData with one signer and its certificate (400)."""


class SignatureInvalid(Exception):
    """The signature does not verify or the signer is not trusted (403)."""


@dataclass(frozen=True)
class DeviceIdentity:
    certificate: x509.Certificate
    sha256: bytes


def load_ca_certificates(path: str) -> list[x509.Certificate]:
    with open(path, "rb") as f:
        return list(x509.load_pem_x509_certificates(f.read()))


def _signed_data(header: str) -> cms.SignedData:
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        raise SignatureMalformed("Mdm-Signature is too large")
    try:
        der = base64.b64decode("".join(header.split()), validate=True)
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise SignatureMalformed("Mdm-Signature is not CMS SignedData")
        signed = info["content"]
        signed.native  # noqa: B018 - force a full parse so errors surface here
        return signed
    except SignatureMalformed:
        raise
    except (binascii.Error, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise SignatureMalformed(f"Mdm-Signature is not valid CMS: {exc.__class__.__name__}") from None


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> tuple[x509.Certificate,
                                                                                 list[x509.Certificate]]:
    sid = signer["sid"]
    candidates = []
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        candidates.append(choice.chosen)
    matched = None
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if cert.issuer == ias["issuer"] and cert.serial_number == ias["serial_number"].native:
                matched = cert
        elif sid.name == "subject_key_identifier" and cert.key_identifier == sid.chosen.native:
            matched = cert
        if matched is not None:
            break
    if matched is None:
        raise SignatureMalformed("the signer's certificate is not in Mdm-Signature")
    try:
        others = [x509.load_der_x509_certificate(c.dump()) for c in candidates if c is not matched]
        return x509.load_der_x509_certificate(matched.dump()), others
    except ValueError:
        raise SignatureMalformed("a certificate in Mdm-Signature does not parse") from None


def _verify_signature(cert: x509.Certificate, signature: bytes, data: bytes,
                      hash_cls: type[hashes.HashAlgorithm]) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_cls()))
        else:
            raise SignatureInvalid("unsupported signer key type")
    except InvalidSignature:
        raise SignatureInvalid("Mdm-Signature does not match the body") from None


def _check_signed_attributes(signer: cms.SignerInfo, body: bytes, hash_name: str) -> bytes:
    """With signed attributes the signature covers them; their messageDigest must match the body."""
    attrs = signer["signed_attrs"]
    digest = None
    for attr in attrs:
        if attr["type"].native == "message_digest":
            digest = attr["values"][0].native
    if digest is None:
        raise SignatureMalformed("signed attributes lack messageDigest")
    if not hmac.compare_digest(digest, hashlib.new(hash_name, body).digest()):
        raise SignatureInvalid("Mdm-Signature does not match the body")
    # The signature is over the DER SET OF, not the [0] IMPLICIT form carried in SignerInfo.
    encoded = attrs.dump()
    return b"\x31" + encoded[1:]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _within_validity(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class IdentityVerifier:
    def __init__(self, trust_anchors: list[x509.Certificate]):
        self._anchors = trust_anchors

    def verify(self, header: str | None, body: bytes) -> DeviceIdentity:
        if not header:
            raise SignatureMissing("Mdm-Signature header is required")
        signed = _signed_data(header)
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise SignatureMalformed("Mdm-Signature must have exactly one signer")
        signer = signers[0]
        hash_name = signer["digest_algorithm"]["algorithm"].native
        hash_cls = _HASHES.get(hash_name)
        if hash_cls is None:
            raise SignatureMalformed(f"unsupported digest {hash_name}")
        cert, others = _signer_certificate(signed, signer)
        signature = signer["signature"].native
        if signer["signed_attrs"].native:
            covered = _check_signed_attributes(signer, body, hash_name)
        else:
            covered = body
        _verify_signature(cert, signature, covered, hash_cls)
        self._check_chain(cert, others)
        return DeviceIdentity(cert, hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())

    def _check_chain(self, cert: x509.Certificate, intermediates: list[x509.Certificate]) -> None:
        now = _now()
        if not _within_validity(cert, now):
            raise SignatureInvalid("the identity certificate is expired or not yet valid")
        current = cert
        for _ in range(MAX_CHAIN_DEPTH):
            for anchor in self._anchors:
                if _issued_by(current, anchor):
                    return
            parent = next((c for c in intermediates if _issued_by(current, c)
                           and _within_validity(c, now)), None)
            if parent is None:
                break
            current = parent
        raise SignatureInvalid("the identity certificate is not issued by a trusted identity CA")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False
