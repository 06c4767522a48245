"""Mutual TLS of the internal gRPC calls: server and channel credentials from GRPC_TLS_*.

Every service has one certificate from the service CA (GRPC_TLS_CA_CERT) whose CN and SAN DNS
name is the service's name. Servers ask for the caller's certificate and accept only the service
CA's (grpc_callers.py then decides per method); clients trust only the service CA and check that
the server's certificate names the service they mean to call, whatever address it has, so a
certificate needs no per-address host names. There is no plaintext mode.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .settings import CommonSettings, SettingsError

# The service identities: certificate CN and SAN DNS name of each service.
ADMIN_CONFIG = "admin-config"
PROFILE_PROCESSOR = "profile-processor"
MDM_ENDPOINT = "mdm-endpoint"
SCEP_PROXY = "scep-proxy"
SERVICES = (ADMIN_CONFIG, PROFILE_PROCESSOR, MDM_ENDPOINT, SCEP_PROXY)

CA_CERT_VAR, CERT_VAR, KEY_VAR = "GRPC_TLS_CA_CERT", "GRPC_TLS_CERT", "GRPC_TLS_KEY"
TLS_VARIABLES = (CA_CERT_VAR, CERT_VAR, KEY_VAR)


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The names a certificate gives its holder, as TLS reads them: its SAN DNS names, or its
    CN when it has none."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ServiceTls:
    """One service's side of internal mutual TLS: the service CA, its certificate and key."""

    service: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def from_files(cls, service: str, ca_cert: str, cert: str, key: str,
                   now: dt.datetime | None = None) -> ServiceTls:
        """Read and check the files: the certificate must be the service CA's, for `service`,
        valid now, and match the key. Raises SettingsError naming the variable."""
        tls = cls(service, _read(CA_CERT_VAR, ca_cert), _read(CERT_VAR, cert), _read(KEY_VAR, key))
        tls._check(now or dt.datetime.now(dt.UTC))
        return tls

    @classmethod
    def from_settings(cls, settings: CommonSettings, service: str) -> ServiceTls:
        paths = {CA_CERT_VAR: settings.grpc_tls_ca_cert, CERT_VAR: settings.grpc_tls_cert,
                 KEY_VAR: settings.grpc_tls_key}
        missing = [name for name, value in paths.items() if not value]
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: {service} "
                "calls or serves internal gRPC over mutual TLS only (PEM paths of the service CA "
                f"certificate, and of this service's certificate and key; `mdmscep-service-pki "
                "OUT_DIR` makes them)")
        return cls.from_files(service, *paths.values())

    def _check(self, now: dt.datetime) -> None:
        try:
            cas = x509.load_pem_x509_certificates(self.ca_pem)
        except ValueError:
            raise SettingsError(f"{CA_CERT_VAR} holds no PEM certificate") from None
        try:
            certificate = x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError:
            raise SettingsError(f"{CERT_VAR} holds no PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except (ValueError, TypeError):
            raise SettingsError(f"{KEY_VAR} holds no unencrypted PEM private key") from None
        if key.public_key() != certificate.public_key():
            raise SettingsError(f"{KEY_VAR} is not the key of the certificate in {CERT_VAR}")
        names = certificate_names(certificate)
        if self.service not in names:
            raise SettingsError(f"{CERT_VAR} is a certificate for {', '.join(names) or 'nobody'}, "
                                f"not for {self.service}")
        if not any(_issued_by(certificate, ca) for ca in cas):
            raise SettingsError(f"{CERT_VAR} was not issued by a CA of {CA_CERT_VAR}")
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SettingsError(
                f"{CERT_VAR} is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%d} "
                f"to {certificate.not_valid_after_utc:%Y-%m-%d})")

    def server_credentials(self) -> grpc.ServerCredentials:
        """Callers must present a certificate from the service CA, or the handshake fails."""
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)],
                                           root_certificates=self.ca_pem,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem,
                                            private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)

    def channel(self, address: str, server_service: str,
                options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        """A channel to `server_service` at `address`: the server's certificate must name that
        service (not the address), and this service's certificate goes with every call."""
        return grpc.secure_channel(address, self.channel_credentials(),
                                   options=[("grpc.ssl_target_name_override", server_service),
                                            *RECONNECT_OPTIONS, *options])


# A peer restarting (a deploy, a crash) is back within seconds: reconnect within a second of it
# instead of gRPC's default backoff, which grows to two minutes.
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100),
                     ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000))


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def service_tls_or_exit(settings: CommonSettings, service: str) -> ServiceTls:
    """Entry points call this at start (as settings.load_or_exit): a missing or unusable
    GRPC_TLS_* ends the process with exit status 78, naming the variables."""
    try:
        return ServiceTls.from_settings(settings, service)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(78) from None
