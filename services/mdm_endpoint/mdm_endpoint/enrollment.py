"""The enrollment profile a host installs to join: device identity by SCEP, then the MDM payload;
and the limit on wrong enrollment secrets that guards it.

Apple: Device Management → MDM payload (com.apple.mdm) and SCEP payload (com.apple.security.scep).
"""

from __future__ import annotations

import plistlib
import uuid

from cryptography import x509
from cryptography.x509.oid import NameOID

from mdmscep_common.failure_limits import FailureLimit, FailureLimiter

# Every right an MDM server can ask for (Apple's AccessRights bit mask, 1..4096).
ALL_ACCESS_RIGHTS = 8191

# Wrong ENROLL_SECRETs per client address, shared by every mdm-endpoint worker and replica: the
# secret is chosen by the operator and may be guessable, so a client over its limit is refused
# before its secret is compared (a host that knows the secret does not fail ten times).
ENROLL_FAILURES_TABLE = "enroll_failures"
ENROLL_FAILURE_LIMIT = FailureLimit(burst=10, refill_seconds=6.0)


def enroll_failure_limiter(db) -> FailureLimiter:
    return FailureLimiter(db, ENROLL_FAILURES_TABLE, ENROLL_FAILURE_LIMIT)


def push_topic(certificate_pem: bytes) -> str:
    """The push topic is the UID attribute of the MDM push certificate's subject."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not uids:
        raise ValueError("the push certificate's subject has no UID (topic)")
    return str(uids[0].value)


def enrollment_profile(mdm_public_url: str, topic: str, identity_scep_url: str,
                       identity_scep_challenge: str, organization: str = "mdmscep") -> bytes:
    # Stable UUIDs per server would be nicer for re-enrollment; random ones are what Apple allows.
    scep_uuid = str(uuid.uuid4()).upper()
    scep_payload = {
        "PayloadType": "com.apple.security.scep",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"com.mdmscep.enrollment.scep.{scep_uuid}",
        "PayloadUUID": scep_uuid,
        "PayloadDisplayName": "Device identity",
        "PayloadContent": {
            "URL": identity_scep_url,
            "Challenge": identity_scep_challenge,
            "Keysize": 2048,
            "Key Type": "RSA",
            "Key Usage": 5,
            "Subject": [[["CN", "mdmscep device identity"]], [["O", organization]]],
        },
    }
    mdm_uuid = str(uuid.uuid4()).upper()
    mdm_payload = {
        "PayloadType": "com.apple.mdm",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"com.mdmscep.enrollment.mdm.{mdm_uuid}",
        "PayloadUUID": mdm_uuid,
        "PayloadDisplayName": "Device management",
        "ServerURL": f"{mdm_public_url}/mdm/connect",
        "CheckInURL": f"{mdm_public_url}/mdm/checkin",
        "Topic": topic,
        "SignMessage": True,
        "IdentityCertificateUUID": scep_uuid,
        "AccessRights": ALL_ACCESS_RIGHTS,
        "CheckOutWhenRemoved": True,
        "ServerCapabilities": ["com.apple.mdm.per-user-connections"],
    }
    profile_uuid = str(uuid.uuid4()).upper()
    return plistlib.dumps({
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": "com.mdmscep.enrollment",
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"{organization} enrollment",
        "PayloadContent": [scep_payload, mdm_payload],
    }, fmt=plistlib.FMT_XML)
