"""Device identities made in-process (no scepserver): an identity CA and certificates it issues,
with the extensions a real identity certificate has, and Mdm-Signature headers signed with them
exactly as tests/hostsim signs (detached CMS SignedData over the body)."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmscep test")])


@dataclass
class Identity:
    certificate: x509.Certificate
    key: object

    def sign(self, body: bytes, digest=None) -> str:
        signature = (pkcs7.PKCS7SignatureBuilder().set_data(body)
                     .add_signer(self.certificate, self.key, digest or hashes.SHA256())
                     .sign(serialization.Encoding.DER,
                           [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
        return base64.b64encode(signature).decode()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


class IdentityCa:
    def __init__(self, common_name: str = "mdmscep test identity CA", key_size: int = 2048):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, valid_days: float = 30, not_before_days: float = -1,
              ec_key: bool = False, key=None) -> Identity:
        """`key`: the identity's private key, made here unless given (a benchmark's thousands of
        hosts share one: an RSA-2048 key costs tens of milliseconds)."""
        key = key or (ec.generate_private_key(ec.SECP256R1()) if ec_key
                      else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        return Identity(cert, key)


def self_signed(common_name: str = "impostor") -> Identity:
    """A certificate no identity CA issued (its own issuer)."""
    ca = IdentityCa(common_name)
    return Identity(ca.certificate, ca.key)
