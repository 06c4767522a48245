"""Certificate paths with chosen extensions, for identity chain tests: intermediate CAs and
device identities that a real identity CA would (or would never) issue, and Mdm-Signature
headers that carry intermediates beside the signer's certificate, as a device whose identity
comes from an issuing CA below the trust anchor sends them."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# KeyUsage(digital_signature, content_commitment, key_encipherment, data_encipherment,
#          key_agreement, key_cert_sign, crl_sign, encipher_only, decipher_only)
CA_KEY_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
DEVICE_KEY_USAGE = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
ENCIPHER_ONLY_KEY_USAGE = x509.KeyUsage(False, False, True, False, False, False, False, False,
                                        False)
SIGN_ONLY_KEY_USAGE = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
ABSENT = object()  # leave the extension out


@dataclass
class Holder:
    """A certificate, its key, and the intermediates a device sends with it."""

    certificate: x509.Certificate
    key: object
    intermediates: list[x509.Certificate] = field(default_factory=list)

    def sign(self, body: bytes) -> str:
        builder = (pkcs7.PKCS7SignatureBuilder().set_data(body)
                   .add_signer(self.certificate, self.key, hashes.SHA256()))
        for intermediate in self.intermediates:
            builder = builder.add_certificate(intermediate)
        signature = builder.sign(serialization.Encoding.DER,
                                 [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
        return base64.b64encode(signature).decode()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def with_intermediates(self, *intermediates: x509.Certificate) -> Holder:
        return Holder(self.certificate, self.key, list(intermediates))


def issue(common_name: str, issuer: Holder | None, *, ca: bool | object = ABSENT,
          path_length: int | None = None, key_usage: x509.KeyUsage | object = ABSENT,
          valid_from_days: float = -1, valid_days: float = 30,
          client_auth: bool = False) -> Holder:
    """A certificate for `common_name` signed by `issuer` (self-signed without one), with
    basicConstraints (cA=`ca`) and keyUsage only when given. EC P-256 keys: quick to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmscep chain test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.certificate.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=valid_from_days))
               .not_valid_after(now + datetime.timedelta(days=valid_days))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if ca is not ABSENT:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=bool(ca), path_length=path_length if ca else None),
            critical=True)
    if key_usage is not ABSENT:
        builder = builder.add_extension(key_usage, critical=True)
    if client_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Holder(certificate, key)


def intermediate_ca(common_name: str, issuer: Holder, **kw) -> Holder:
    """An issuing CA as a real identity CA hierarchy has it (cA=TRUE, keyCertSign)."""
    kw.setdefault("ca", True)
    kw.setdefault("key_usage", CA_KEY_USAGE)
    return issue(common_name, issuer, **kw)


def device_identity(common_name: str, issuer: Holder, **kw) -> Holder:
    """A device identity as scepserver issues it (keyUsage digitalSignature, clientAuth, no
    basicConstraints), unless told otherwise."""
    kw.setdefault("key_usage", DEVICE_KEY_USAGE)
    kw.setdefault("client_auth", True)
    return issue(common_name, issuer, **kw)
