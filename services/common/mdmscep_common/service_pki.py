"""The service CA of internal gRPC and one certificate per service (`mdmscep-service-pki`).

    mdmscep-service-pki OUT_DIR [--days N] [--force]

writes OUT_DIR/ca.crt and OUT_DIR/<service>/tls.crt, tls.key for each of service_tls.SERVICES:
the files GRPC_TLS_CA_CERT, GRPC_TLS_CERT and GRPC_TLS_KEY name (deploy/ turns them into
Secrets; `make run` makes its own under its run directory). The CA's private key is used to
issue the four certificates and then forgotten, never written: nobody can issue a fifth
identity from these files; renewing means running the command again (--force) and rolling
every service.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .service_tls import SERVICES

DEFAULT_DAYS = 825
CA_COMMON_NAME = "mdmscep internal service CA"
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
# Issued a little in the past, so a machine whose clock is slightly behind accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class ServiceCertificate:
    service: str
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class ServicePki:
    ca_pem: bytes
    services: dict[str, ServiceCertificate]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmscep"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=key_cert_sign,
                         encipher_only=False, decipher_only=False)


def issue_service_pki(services: tuple[str, ...] = SERVICES, days: int = DEFAULT_DAYS,
                      now: dt.datetime | None = None) -> ServicePki:
    """A new service CA (may sign end-entity certificates only) and a client+server certificate
    for each service, CN and SAN DNS name the service's name. The CA key is not returned."""
    start = (now or dt.datetime.now(dt.UTC)) - CLOCK_SKEW
    end = start + dt.timedelta(days=days)
    ca_key = _key()
    ca_name = _name(CA_COMMON_NAME)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(key_cert_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    issued = {}
    for service in services:
        key = _key()
        certificate = (
            x509.CertificateBuilder().subject_name(_name(service)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(service)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
        issued[service] = ServiceCertificate(
            service, certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))
    return ServicePki(ca.public_bytes(serialization.Encoding.PEM), issued)


def pki_paths(out_dir: Path, services: tuple[str, ...] = SERVICES) -> dict[str, Path]:
    """Every file write_service_pki writes: "ca" and "<service>/tls.crt|tls.key"."""
    paths = {"ca": out_dir / CA_FILE}
    for service in services:
        paths[f"{service}/{CERT_FILE}"] = out_dir / service / CERT_FILE
        paths[f"{service}/{KEY_FILE}"] = out_dir / service / KEY_FILE
    return paths


class PkiExists(Exception):
    """Files of a service PKI are already there (and --force was not given)."""


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), mode)  # an existing file (--force) keeps its old mode otherwise
        file.write(data)


def write_service_pki(out_dir: Path, force: bool = False, days: int = DEFAULT_DAYS,
                      services: tuple[str, ...] = SERVICES) -> ServicePki:
    """Issue a service PKI into out_dir (ca.crt; <service>/tls.crt; <service>/tls.key, 0600).
    Raises PkiExists, writing nothing, when any file exists and force is False."""
    out_dir = Path(out_dir)
    existing = [p for p in pki_paths(out_dir, services).values() if p.exists()]
    if existing and not force:
        raise PkiExists(", ".join(str(p) for p in existing))
    pki = issue_service_pki(services, days)
    for service, issued in pki.services.items():
        _write(out_dir / service / KEY_FILE, issued.key_pem, 0o600)
        _write(out_dir / service / CERT_FILE, issued.cert_pem, 0o644)
    _write(out_dir / CA_FILE, pki.ca_pem, 0o644)
    return pki


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mdmscep-service-pki",
        description="Create the service CA of internal gRPC (mutual TLS) and one certificate per "
                    f"service ({', '.join(SERVICES)}): OUT_DIR/ca.crt (GRPC_TLS_CA_CERT of "
                    "every service) and OUT_DIR/<service>/tls.crt, tls.key (its GRPC_TLS_CERT, "
                    "GRPC_TLS_KEY). The CA's private key is not kept.")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help=f"validity of the CA and the certificates (default {DEFAULT_DAYS})")
    parser.add_argument("--force", action="store_true",
                        help="replace existing files (a new CA: roll every service)")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    try:
        pki = write_service_pki(args.out_dir, force=args.force, days=args.days)
    except PkiExists as exc:
        print(f"mdmscep-service-pki: not overwriting existing files (use --force): {exc}",
              file=sys.stderr)
        return 1
    print(f"service CA: {args.out_dir / CA_FILE}")
    for service in pki.services:
        print(f"{service}: {args.out_dir / service / CERT_FILE}, {args.out_dir / service / KEY_FILE}")
    return 0


def run() -> None:
    sys.exit(main())
