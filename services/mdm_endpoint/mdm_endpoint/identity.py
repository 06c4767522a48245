"""Device identity: verify `Mdm-Signature` (base64 detached CMS SignedData over the exact body)
and that its signer chains to the identity CA(s) in MDM_IDENTITY_CA_CERTS.

asn1crypto parses the CMS structure; cryptography does the signature math (it has no CMS verify)
and the path validation (cryptography.x509.verification: RFC 5280 chain building with
basicConstraints, pathLenConstraint, validity of every certificate on the path, the trust anchor
included, and a budget on signature checks), with the extension rules of IDENTITY_CA_POLICY and
DEVICE_IDENTITY_POLICY below.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import logging
from dataclasses import dataclass

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification

log = logging.getLogger(__name__)

MAX_SIGNATURE_HEADER_CHARS = 64 * 1024
# Certificates below the trust anchor on a path: the device's identity certificate and up to
# three intermediate CAs (an identity CA is usually the anchor itself or one level below it).
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


def _issuer_may_sign_certificates(policy, certificate, key_usage) -> None:
    if key_usage is not None and not key_usage.key_cert_sign:
        raise ValueError("an issuer's keyUsage does not allow keyCertSign")


def _device_is_not_a_ca(policy, certificate, basic_constraints) -> None:
    if basic_constraints is not None and basic_constraints.ca:
        raise ValueError("the identity certificate is a CA certificate")


def _device_may_sign(policy, certificate, key_usage) -> None:
    if key_usage is not None and not key_usage.digital_signature:
        raise ValueError("the identity certificate's keyUsage does not allow digitalSignature")


# Every issuer on the path (the trust anchor too): basicConstraints present with cA=TRUE (the
# library then enforces pathLenConstraint) and, when keyUsage is present, keyCertSign. Other
# extensions are not required: identity CAs (micromdm scepserver, enterprise SCEP CAs) are not
# web PKI CAs, and the web PKI defaults would refuse, for instance, a CA without keyUsage.
IDENTITY_CA_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC,
                    _issuer_may_sign_certificates))
# The device's identity certificate: not a CA, and allowed to sign when keyUsage is present.
# (scepserver's have keyUsage digitalSignature and no basicConstraints; no subjectAltName is
# required, unlike the web PKI defaults for a client.)
DEVICE_IDENTITY_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .may_be_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC,
                    _device_is_not_a_ca)
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _device_may_sign))


class ParsedParts:
    """Digests of parts of Mdm-Signature SignedData (by position and exact bytes) that were
    parsed in full before. A host signs every request with the same certificates, signer id,
    algorithms and capabilities; only the digest, signing time and signature change. Parsing is
    a function of those bytes, so a part seen before needs no second parse. Bounded."""

    def __init__(self, max_entries: int):
        self._keys: set[bytes] = set()
        self._max = max_entries

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def add(self, key: bytes) -> None:
        if len(self._keys) >= self._max:
            self._keys.clear()
        self._keys.add(key)


def _part_key(position: bytes, value: core.Asn1Value) -> bytes:
    return hashlib.sha256(position + b"\0" + (value.contents or b"")).digest()


def _parse_in_full(value: core.Asn1Value, position: bytes, parsed: ParsedParts | None) -> None:
    """`value.native`: every part parsed and converted, so errors surface here; skipped for a
    part whose exact bytes parsed in full before at this position."""
    if isinstance(value, core.Void):
        return
    key = _part_key(position, value) if parsed is not None else b""
    if parsed is not None and key in parsed:
        return
    value.native  # noqa: B018 - force a full parse so errors surface here
    if parsed is not None:
        parsed.add(key)


def _signed_data(header: str, parsed: ParsedParts | None = None
                 ) -> tuple[cms.SignedData, bytes | None]:
    """The SignedData, parsed in full so errors surface here (what `signed.native` does, field by
    field and, within signer infos, attribute by attribute, so parts `parsed` before are not
    parsed again), and a key of its certificate set (None without one)."""
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        raise SignatureMalformed("Mdm-Signature is too large")
    try:
        der = base64.b64decode("".join(header.split()), validate=True)
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise SignatureMalformed("Mdm-Signature is not CMS SignedData")
        signed = info["content"]
        certificates_key = None
        for name, *_ in signed._fields:
            child = signed[name]
            if name == "signer_infos":
                for signer in child:
                    for field, *_ in signer._fields:
                        part = signer[field]
                        if field == "signed_attrs" and not isinstance(part, core.Void):
                            for attribute in part:
                                _parse_in_full(attribute, b"signed_attribute", parsed)
                        else:
                            _parse_in_full(part, b"signer_info." + field.encode(), parsed)
                continue
            position = b"signed_data." + name.encode()
            _parse_in_full(child, position, parsed)
            if name == "certificates" and not isinstance(child, core.Void):
                certificates_key = _part_key(position, child)
        return signed, certificates_key
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
                      hash_cls: type[hashes.HashAlgorithm], key=None) -> None:
    key = key or cert.public_key()
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


# Verified paths, by the exact bytes of the signer's certificate and the other certificates
# sent with it: every request of a host carries the same ones. Bounded.
CHAIN_CACHE_MAX = 200_000
# Certificate sets with their signers, and parts of signatures parsed in full (a host's requests
# come in bursts: Idle, Acknowledged, Idle, …, each with the same certificates). Bounded.
SIGNER_CACHE_MAX = 4096


@dataclass(frozen=True)
class _Signer:
    """What a certificate set and a signer id yield (both fixed by their bytes)."""

    certificate: x509.Certificate
    others: list[x509.Certificate]
    fingerprint: bytes
    public_key: object
    chain_key: bytes  # sha256 of the exact certificates, signer first (the path cache's key)


def _warn_unless_issuer(anchor: x509.Certificate) -> None:
    """IDENTITY_CA_POLICY holds for the trust anchor too: one that fails it vouches for no
    device, which an operator should hear at start rather than from every host's 403."""
    extensions = anchor.extensions
    try:
        is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        signs_certificates = extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        signs_certificates = True
    if not (is_ca and signs_certificates):
        log.warning("an identity CA certificate cannot issue device identities (basicConstraints "
                    "cA=TRUE and, with keyUsage, keyCertSign are required): no identity it "
                    "issued will be accepted", extra={"subject": anchor.subject.rfc4514_string()})


class IdentityVerifier:
    def __init__(self, trust_anchors: list[x509.Certificate]):
        for anchor in trust_anchors:
            _warn_unless_issuer(anchor)
        self._store = verification.Store(trust_anchors) if trust_anchors else None
        # Paths verified before (chain_key → the time all their certificates are valid in):
        # only the path's answer is remembered, for exactly those certificates; the signature
        # over each body is always verified.
        self._verified_paths: dict[bytes, tuple[datetime.datetime, datetime.datetime]] = {}
        # Parts of signatures parsed in full before; per certificate set among them, its
        # signers (signer id bytes → _Signer).
        self._parsed = ParsedParts(SIGNER_CACHE_MAX * 4)
        self._signers: dict[bytes, dict[bytes, _Signer]] = {}

    def _signer(self, signed: cms.SignedData, signer: cms.SignerInfo,
                certificates_key: bytes | None) -> _Signer:
        """_signer_certificate's answer (a pure function of the certificate set and the signer
        id), remembered per certificate set."""
        known = self._signers.get(certificates_key) if certificates_key else None
        sid_key = _part_key(b"signer_info.sid", signer["sid"]) if known is not None else b""
        if known is not None and sid_key in known:
            return known[sid_key]
        cert, others = _signer_certificate(signed, signer)
        try:
            key = cert.public_key()
        except (ValueError, TypeError):
            raise SignatureMalformed("the signer's public key cannot be read") from None
        path = hashlib.sha256()
        for certificate in (cert, *others):
            der = certificate.public_bytes(Encoding.DER)
            path.update(len(der).to_bytes(4, "big") + der)
        found = _Signer(cert, others, hashlib.sha256(cert.public_bytes(Encoding.DER)).digest(), key,
                        path.digest())
        if known is not None and len(known) < 8:
            known[sid_key] = found
        return found

    def verify(self, header: str | None, body: bytes) -> DeviceIdentity:
        if not header:
            raise SignatureMissing("Mdm-Signature header is required")
        signed, certificates_key = _signed_data(header, self._parsed)
        if certificates_key is not None and certificates_key not in self._signers:
            if len(self._signers) >= SIGNER_CACHE_MAX:
                self._signers.clear()
            self._signers[certificates_key] = {}
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise SignatureMalformed("Mdm-Signature must have exactly one signer")
        signer = signers[0]
        hash_name = signer["digest_algorithm"]["algorithm"].native
        hash_cls = _HASHES.get(hash_name)
        if hash_cls is None:
            raise SignatureMalformed(f"unsupported digest {hash_name}")
        found = self._signer(signed, signer, certificates_key)
        cert, others, fingerprint = found.certificate, found.others, found.fingerprint
        signature = signer["signature"].native
        attributes = signer["signed_attrs"]
        if not isinstance(attributes, core.Void) and len(attributes):  # `.native` is truthy
            covered = _check_signed_attributes(signer, body, hash_name)
        else:
            covered = body
        _verify_signature(cert, signature, covered, hash_cls, found.public_key)
        now = _now()
        valid = self._verified_paths.get(found.chain_key)
        if valid is None or not valid[0] <= now <= valid[1]:
            valid = self._verify_path(cert, others, now)
            if len(self._verified_paths) >= CHAIN_CACHE_MAX:
                self._verified_paths.clear()
            self._verified_paths[found.chain_key] = valid
        return DeviceIdentity(cert, fingerprint)

    def _verify_path(self, cert: x509.Certificate, others: list[x509.Certificate],
                     now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
        """A valid path from the signer to a trust anchor at `now`, through the other
        certificates sent; the time in which every certificate on it is valid."""
        if self._store is None:
            raise SignatureInvalid("no identity CA is configured (MDM_IDENTITY_CA_CERTS)")
        verifier = (verification.PolicyBuilder().store(self._store).time(now)
                    .max_chain_depth(MAX_CHAIN_DEPTH - 1)  # intermediates between leaf and anchor
                    .extension_policies(ca_policy=IDENTITY_CA_POLICY,
                                        ee_policy=DEVICE_IDENTITY_POLICY)
                    .build_client_verifier())
        try:
            path = verifier.verify(cert, others).chain
        except verification.VerificationError as exc:
            reason = str(exc).split(" (encountered processing")[0][:200]
            raise SignatureInvalid("the identity certificate does not chain to a trusted "
                                   f"identity CA: {reason}") from None
        return (max(c.not_valid_before_utc for c in path),
                min(c.not_valid_after_utc for c in path))
