"""Throw-away PKI for tests: an MDM push certificate (subject UID = topic) and the TLS
certificates of the fake APNs server."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: x509.Name, issuer: x509.Name, public_key, signing_key, ca: bool,
          extensions=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass(frozen=True)
class ApnsPki:
    topic: str
    push_cert: Path      # APNS_CERT
    push_key: Path       # APNS_KEY
    push_ca: Path        # what the fake APNs trusts for client certificates
    server_cert: Path
    server_key: Path
    server_ca: Path      # APNS_CA_CERTS


def make_apns_pki(directory: Path, topic: str | None = None,
                  server_names: tuple[str, ...] = ()) -> ApnsPki:
    directory.mkdir(parents=True, exist_ok=True)
    topic = topic or f"com.apple.mgmt.External.{uuid.uuid4()}"
    push_ca_key = _key()
    push_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Apple Push CA")])
    push_ca = _cert(push_ca_name, push_ca_name, push_ca_key.public_key(), push_ca_key, ca=True)
    push_key = _key()
    push_name = x509.Name([x509.NameAttribute(NameOID.USER_ID, topic),
                           x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic}"[:64])])
    push = _cert(push_name, push_ca_name, push_key.public_key(), push_ca_key, ca=False,
                 extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    server_ca_key = _key()
    server_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake APNs Server CA")])
    server_ca = _cert(server_ca_name, server_ca_name, server_ca_key.public_key(), server_ca_key,
                      ca=True)
    server_key = _key()
    server = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
                   server_ca_name, server_key.public_key(), server_ca_key, ca=False,
                   extensions=[x509.SubjectAlternativeName([
                       x509.DNSName("localhost"), *(x509.DNSName(n) for n in server_names),
                       x509.IPAddress(ip_address("127.0.0.1"))]),
                       x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    pem = serialization.Encoding.PEM
    paths = ApnsPki(topic, directory / "push.pem", directory / "push.key",
                    directory / "push-ca.pem", directory / "apns-server.pem",
                    directory / "apns-server.key", directory / "apns-server-ca.pem")
    paths.push_cert.write_bytes(push.public_bytes(pem))
    _write_key(paths.push_key, push_key)
    paths.push_ca.write_bytes(push_ca.public_bytes(pem))
    paths.server_cert.write_bytes(server.public_bytes(pem))
    _write_key(paths.server_key, server_key)
    paths.server_ca.write_bytes(server_ca.public_bytes(pem))
    return paths
