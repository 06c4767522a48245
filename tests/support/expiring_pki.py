"""Certificates with a chosen validity, for the expiring-credential checks (made the way
hostsim.pki makes the push certificate: an MDM push certificate's subject UID is its topic)."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _certificate(name: x509.Name, issuer: x509.Name, key, signing_key, days: float, ca: bool,
                 extensions=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def ca_pem(common_name: str, days: float) -> bytes:
    """A self-signed CA certificate valid `days` more days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _certificate(name, name, key, key, days, ca=True).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class PushCertificate:
    cert: Path
    key: Path
    topic: str


def push_certificate(directory: Path, days: float) -> PushCertificate:
    """An MDM push certificate (and its key) valid `days` more days."""
    directory.mkdir(parents=True, exist_ok=True)
    topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Apple Push CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.USER_ID, topic),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic}"[:64])])
    cert = _certificate(name, ca_name, key, ca_key, days, ca=False,
                        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    paths = PushCertificate(directory / "push.pem", directory / "push.key", topic)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    paths.key.chmod(0o600)
    return paths
