"""`mdmscep-service-pki`: the internal gRPC service CA and one certificate per service, in the
layout deploy/ and the launcher rely on; and the checks ServiceTls makes of what it is given."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdmscep_common.service_pki import write_service_pki
from mdmscep_common.service_tls import SERVICES, ServiceTls
from mdmscep_common.settings import SettingsError
from tests.support.settings import load_settings

CLI = Path(sys.executable).parent / "mdmscep-service-pki"
KEY = "test-server-private-key-0123456789abcdef"


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_command_writes_the_ca_and_a_certificate_per_service(tmp_path):
    out = tmp_path / "pki"
    done = subprocess.run([str(CLI), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["ca.crt", *(f"{s}/tls.crt" for s in SERVICES),
                            *(f"{s}/tls.key" for s in SERVICES)])
    ca = _certificate(out / "ca.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    for service in SERVICES:
        leaf = _certificate(out / service / "tls.crt")
        leaf.verify_directly_issued_by(ca)
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == service
        assert leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [service]
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert (out / service / "tls.key").stat().st_mode & 0o777 == 0o600
        ServiceTls.from_files(service, str(out / "ca.crt"), str(out / service / "tls.crt"),
                              str(out / service / "tls.key"))
    # The CA's private key is not kept anywhere.
    assert [p.name for p in out.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()] \
        == ["tls.key"] * len(SERVICES)


def test_existing_files_are_kept_unless_forced(tmp_path):
    out = tmp_path / "pki"
    write_service_pki(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = subprocess.run([str(CLI), str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not overwriting existing files" in again.stderr
    assert {p: p.read_bytes() for p in before} == before
    (out / "scep-proxy" / "tls.key").chmod(0o644)
    forced = subprocess.run([str(CLI), str(out), "--force"], capture_output=True, text=True,
                            timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert (out / "ca.crt").read_bytes() != before[out / "ca.crt"]
    assert (out / "scep-proxy" / "tls.key").stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    write_service_pki(root / "ours")
    write_service_pki(root / "theirs")
    return root


def _paths(root: Path, service: str) -> tuple[str, str, str]:
    return str(root / "ca.crt"), str(root / service / "tls.crt"), str(root / service / "tls.key")


def test_service_tls_refuses_what_would_fail_later(pki):
    ours, theirs = pki / "ours", pki / "theirs"
    ca, cert, key = _paths(ours, "mdm-endpoint")
    with pytest.raises(SettingsError, match="certificate for mdm-endpoint, not for scep-proxy"):
        ServiceTls.from_files("scep-proxy", ca, cert, key)
    with pytest.raises(SettingsError, match="not the key of the certificate"):
        ServiceTls.from_files("mdm-endpoint", ca, cert, str(ours / "scep-proxy" / "tls.key"))
    with pytest.raises(SettingsError, match="not issued by a CA of GRPC_TLS_CA_CERT"):
        ServiceTls.from_files("mdm-endpoint", str(theirs / "ca.crt"), cert, key)
    with pytest.raises(SettingsError, match="GRPC_TLS_KEY: cannot read"):
        ServiceTls.from_files("mdm-endpoint", ca, cert, str(ours / "missing.key"))
    with pytest.raises(SettingsError, match="GRPC_TLS_CA_CERT holds no PEM certificate"):
        ServiceTls.from_files("mdm-endpoint", key, cert, key)
    with pytest.raises(SettingsError, match="not valid now"):
        ServiceTls.from_files("mdm-endpoint", ca, cert, key,
                              now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3650))


def test_settings_name_the_missing_variables_and_the_bind_address():
    settings = load_settings({"SERVER_PRIVATE_KEY": KEY})
    assert settings.grpc_bind_address == "127.0.0.1"
    assert settings.mdm_grpc_addr == "127.0.0.1:50052"
    with pytest.raises(SettingsError, match="^GRPC_TLS_CA_CERT, GRPC_TLS_CERT, GRPC_TLS_KEY are "
                                            "required"):
        ServiceTls.from_settings(settings, "admin-config")
    with pytest.raises(SettingsError, match="^GRPC_TLS_CERT is required"):
        ServiceTls.from_settings(load_settings({"SERVER_PRIVATE_KEY": KEY,
                                                "GRPC_TLS_CA_CERT": "/x", "GRPC_TLS_KEY": "/y"}),
                                 "admin-config")
    everywhere = load_settings({"SERVER_PRIVATE_KEY": KEY, "GRPC_BIND_ADDRESS": "0.0.0.0"})
    assert everywhere.processor_grpc_addr == "127.0.0.1:50051"
    one = load_settings({"SERVER_PRIVATE_KEY": KEY, "GRPC_BIND_ADDRESS": "10.1.2.3"})
    assert one.scep_proxy_grpc_addr == "10.1.2.3:50053"
    v6 = load_settings({"SERVER_PRIVATE_KEY": KEY, "GRPC_BIND_ADDRESS": "::1"})
    assert v6.mdm_grpc_addr == "[::1]:50052"
    with pytest.raises(SettingsError, match="GRPC_BIND_ADDRESS must be an IP address"):
        load_settings({"SERVER_PRIVATE_KEY": KEY, "GRPC_BIND_ADDRESS": "everywhere"})
