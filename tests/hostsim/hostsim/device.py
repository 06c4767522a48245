"""A simulated Apple host: enrolls with the MDM, signs every message with its identity
certificate, answers Idle polls and handles the profile and certificate commands like a Mac.
"""

from __future__ import annotations

import base64
import logging
import os
import plistlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from . import scep

log = logging.getLogger(__name__)

IDENTITY_ATTEMPTS = 4


@dataclass
class InstalledProfile:
    identifier: str
    uuid: str
    display_name: str
    raw: bytes
    certificates: list[x509.Certificate] = field(default_factory=list)


def expand_device_variables(text: str, host: SimulatedHost) -> str:
    """What macOS substitutes in a SCEP payload's Subject."""
    return (text.replace("%SerialNumber%", host.serial_number)
                .replace("%HardwareUUID%", host.udid)
                .replace("%ComputerName%", host.device_name))


class MdmRefused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"MDM answered {status}: {text.strip()[:200]}")
        self.status = status


class SimulatedHost:
    def __init__(self, mdm_url: str, udid: str | None = None, serial_number: str | None = None,
                 workdir: Path | None = None, client: httpx.Client | None = None,
                 model: str = "Mac15,3", platform: str = "macOS", os_version: str = "15.1"):
        self.mdm_url = mdm_url.rstrip("/")
        self.udid = udid or str(uuid.uuid4()).upper()
        self.serial_number = serial_number or ("C0" + os.urandom(5).hex().upper())
        self.device_name = f"{platform}-{self.serial_number}"
        # Apple's hardware model identifier: Authenticate's Model and DeviceInformation's
        # ProductName.
        self.model = model
        self.os_version = os_version
        self.workdir = workdir
        self.client = client or httpx.Client(timeout=60)
        self.push_token = os.urandom(32)
        self.push_magic = str(uuid.uuid4()).upper()
        self.topic = ""
        self.identity_cert: x509.Certificate | None = None
        self.identity_key = None
        self.profiles: dict[str, InstalledProfile] = {}
        self.handled: list[tuple[str, str, str]] = []  # (request type, command uuid, status)
        self.lock = threading.Lock()
        self.scep_url_override: str | None = None
        # Test switches: acknowledge SCEP profiles without enrolling (no proxy yet), or refuse
        # every InstallProfile with this error text.
        self.fetch_certificates = True
        self.install_error: str | None = None
        # A key made beforehand for the certificates of SCEP payloads (None: scep.pooled_key).
        self.scep_key_pem: bytes | None = None
        self.received: list[dict] = []  # every command plist, in order

    # -- signing and transport ---------------------------------------------------------------

    def sign(self, body: bytes) -> str:
        signature = (pkcs7.PKCS7SignatureBuilder().set_data(body)
                     .add_signer(self.identity_cert, self.identity_key, hashes.SHA256())
                     .sign(serialization.Encoding.DER,
                           # Binary: sign the exact bytes (no S/MIME line-ending rewriting).
                           [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
        return base64.b64encode(signature).decode()

    def _put(self, path: str, message: dict) -> bytes:
        body = plistlib.dumps(message, fmt=plistlib.FMT_XML)
        response = self.client.put(f"{self.mdm_url}{path}", content=body,
                                   headers={"Mdm-Signature": self.sign(body),
                                            "Content-Type": "application/x-apple-aspen-mdm-checkin"})
        if response.status_code != 200:
            raise MdmRefused(response.status_code, response.text)
        return response.content

    def checkin(self, message: dict) -> None:
        self._put("/mdm/checkin", {"UDID": self.udid, **message})

    def connect(self, message: dict) -> bytes:
        return self._put("/mdm/connect", {"UDID": self.udid, **message})

    # -- enrollment ----------------------------------------------------------------------------

    def enroll(self, enroll_secret: str) -> None:
        response = self.client.get(f"{self.mdm_url}/mdm/enroll", params={"secret": enroll_secret})
        if response.status_code != 200:
            raise MdmRefused(response.status_code, response.text)
        profile = plistlib.loads(response.content)
        payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
        identity = payloads["com.apple.security.scep"]["PayloadContent"]
        mdm = payloads["com.apple.mdm"]
        self.topic = mdm["Topic"]
        # Named after the UDID so concurrent enrollments do not collide on one DN at the CA; a
        # device retries a failed enrollment (micromdm's scepserver races under concurrency).
        for attempt in range(IDENTITY_ATTEMPTS):
            try:
                enrolled = scep.enroll(identity["URL"], identity["Challenge"],
                                       [[["CN", self.udid]], [["O", "mdmscep simulated host"]]],
                                       identity.get("Keysize", 2048), self.workdir)
                break
            except scep.ScepEnrollmentFailed:
                if attempt + 1 == IDENTITY_ATTEMPTS:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self.identity_cert = enrolled.certificate
        self.identity_key = scep.load_key(enrolled.key_pem)
        self.checkin({"MessageType": "Authenticate", "Topic": self.topic,
                      "SerialNumber": self.serial_number, "DeviceName": self.device_name,
                      "Model": self.model, "OSVersion": self.os_version})
        self.checkin({"MessageType": "TokenUpdate", "Topic": self.topic,
                      "Token": self.push_token, "PushMagic": self.push_magic})

    def check_out(self) -> None:
        self.checkin({"MessageType": "CheckOut", "Topic": self.topic})

    # -- commands ------------------------------------------------------------------------------

    def poll(self, max_commands: int = 50) -> list[tuple[str, str, str]]:
        """One connection: Idle, then handle commands until the server has none."""
        handled = []
        with self.lock:
            answer = self.connect({"Status": "Idle"})
            while answer and len(handled) < max_commands:
                command = plistlib.loads(answer)
                result = self.handle(command)
                entry = (command["Command"]["RequestType"], command["CommandUUID"], result["Status"])
                handled.append(entry)
                self.handled.append(entry)
                answer = self.connect(result)
        return handled

    def handle(self, command: dict) -> dict:
        self.received.append(command)
        request = command["Command"]
        kind = request.get("RequestType")
        base = {"CommandUUID": command["CommandUUID"]}
        if kind == "InstallProfile":
            return {**base, **self._install_profile(request["Payload"])}
        if kind == "RemoveProfile":
            self.profiles.pop(request.get("Identifier", ""), None)
            return {**base, "Status": "Acknowledged"}
        if kind == "ProfileList":
            return {**base, "Status": "Acknowledged", "ProfileList": [
                {"PayloadIdentifier": p.identifier, "PayloadUUID": p.uuid,
                 "PayloadDisplayName": p.display_name, "PayloadVersion": 1, "IsManaged": True}
                for p in self.profiles.values()]}
        if kind == "CertificateList":
            certs = [(self.identity_cert, True)] + [
                (c, False) for p in self.profiles.values() for c in p.certificates]
            return {**base, "Status": "Acknowledged", "CertificateList": [
                {"CommonName": _common_name(c), "IsIdentity": identity,
                 "Data": c.public_bytes(serialization.Encoding.DER)} for c, identity in certs]}
        if kind == "DeviceInformation":
            facts = {"SerialNumber": self.serial_number, "DeviceName": self.device_name,
                     "Model": self.model, "ProductName": self.model,
                     "OSVersion": self.os_version}
            return {**base, "Status": "Acknowledged", "QueryResponses": {
                query: facts[query] for query in request.get("Queries", []) if query in facts}}
        return {**base, "Status": "Error", "ErrorChain": [{
            "ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
            "LocalizedDescription": f"Unknown command {kind}",
            "USEnglishDescription": f"Unknown command {kind}"}]}

    def _install_profile(self, payload: bytes) -> dict:
        if self.install_error:
            return _error(4001, "MCInstallationErrorDomain", self.install_error)
        try:
            profile = plistlib.loads(payload)
        except Exception as exc:  # noqa: BLE001 - a device reports any parse failure
            return _error(1000, "MCProfileErrorDomain", f"The profile cannot be read: {exc}")
        certificates = []
        for item in profile.get("PayloadContent", []):
            if item.get("PayloadType") != "com.apple.security.scep" or not self.fetch_certificates:
                continue
            content = item.get("PayloadContent", {})
            subject = [[[attr, expand_device_variables(str(value), self)] for attr, value in rdn]
                       for rdn in content.get("Subject", [])]
            try:
                enrolled = scep.enroll(self.scep_url_override or content["URL"],
                                       content.get("Challenge", ""), subject,
                                       int(content.get("Keysize", 2048)), self.workdir,
                                       key_pem=self.scep_key_pem)
            except scep.ScepEnrollmentFailed as exc:
                return _error(22013, "MCSCEPErrorDomain",
                              f"The SCEP server returned an invalid response. {exc}")
            certificates.append(enrolled.certificate)
        identifier = profile.get("PayloadIdentifier", "")
        self.profiles[identifier] = InstalledProfile(
            identifier, profile.get("PayloadUUID", ""), profile.get("PayloadDisplayName", ""),
            payload, certificates)
        return {"Status": "Acknowledged"}


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _error(code: int, domain: str, text: str) -> dict:
    return {"Status": "Error", "ErrorChain": [{"ErrorCode": code, "ErrorDomain": domain,
                                               "LocalizedDescription": text,
                                               "USEnglishDescription": text}]}
