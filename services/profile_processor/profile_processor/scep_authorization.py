"""ProfileAuthority.AuthorizeScep: may this proxy URL reach its CA now? (README.md "SCEP proxy")

Allowed only for an enrolled host whose delivery of the profile is pending, the CA the profile
uses, and a one-time code that is current, unused and unexpired. PKIOperation uses the code up
atomically; GetCACaps/GetCACert only check it.

GiveBackScepCode undoes that use when the proxy could not forward the PKIOperation (the CA's
slots were all taken: the host got 503 and retries with the same URL). The proxy authorizes before
it takes a slot, so forged URLs never hold or wait for one; one gRPC call on the happy path, a
second only for a request refused busy.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdmscep.v1 import profile_authority_pb2, profile_authority_pb2_grpc
from mdmscep.v1.profile_authority_pb2 import ScepRefusal
from mdmscep_common.one_time_codes import code_sha256 as code_hash

OPERATIONS = {"GetCACaps", "GetCACert", "PKIOperation"}
# A PKIOperation refused busy waited at most SCEP_PROXY_QUEUE_TIMEOUT (seconds) after using its
# code up; a code used longer ago than this went to the CA and is never given back.
GIVE_BACK_WINDOW_SECONDS = 600


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # When refused: why (the proxy turns it into the host's HTTP answer).
    refusal: int = ScepRefusal.SCEP_REFUSAL_UNSPECIFIED
    upstream_url: str = ""
    ca_id: int = 0
    # When allowed: the CA's fleet-wide limit of PKIOperations in flight (the proxy's slots),
    # read with the rest of the CA so an admin's change applies from the next authorization.
    max_concurrent_requests: int = 0


def _refuse(refusal: int, reason: str) -> Decision:
    return Decision(False, reason, refusal)


class ScepAuthority:
    def __init__(self, db):
        self._db = db

    def authorize(self, host_uuid: str, profile_uuid: str, ca_name: str, code: str,
                  operation: str) -> Decision:
        if operation not in OPERATIONS:
            return _refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_OPERATION, "unknown SCEP operation")
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM enrolled_hosts WHERE uuid = %s",
                            (host_uuid,)).fetchone() is None:
                return _refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_HOST, "unknown host")
            if conn.execute("SELECT 1 FROM known_profiles WHERE uuid = %s",
                            (profile_uuid,)).fetchone() is None:
                return _refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_PROFILE, "unknown profile")
            ca = conn.execute(
                """SELECT ca.id, ca.url, ca.max_concurrent_requests
                   FROM known_certificate_authorities ca
                   JOIN known_profile_certificate_authorities pc ON pc.ca_id = ca.id
                   WHERE ca.name = %s AND pc.profile_uuid = %s""", (ca_name, profile_uuid)).fetchone()
            if ca is None:
                return _refuse(ScepRefusal.SCEP_REFUSAL_UNKNOWN_CA,
                               f"unknown certificate authority {ca_name} for this profile")
            delivery = conn.execute(
                "SELECT status, operation_type, command_uuid FROM host_profiles "
                "WHERE host_uuid = %s AND profile_uuid = %s", (host_uuid, profile_uuid)).fetchone()
            if delivery is None or delivery["operation_type"] != "install" \
                    or delivery["status"] != "pending":
                return _refuse(ScepRefusal.SCEP_REFUSAL_NOT_PENDING,
                               "this host's delivery of the profile is not pending")
            row = conn.execute(
                """SELECT command_uuid, used_at, expires_at < now() AS expired FROM scep_codes
                   WHERE code_sha256 = %s AND host_uuid = %s AND profile_uuid = %s
                     AND ca_name = %s""",
                (code_hash(code), host_uuid, profile_uuid, ca_name)).fetchone()
            if row is None:
                return _refuse(ScepRefusal.SCEP_REFUSAL_CODE_UNKNOWN, "unknown one-time code")
            if row["used_at"] is not None:
                return _refuse(ScepRefusal.SCEP_REFUSAL_CODE_USED, "one-time code already used")
            if row["expired"]:
                return _refuse(ScepRefusal.SCEP_REFUSAL_CODE_EXPIRED, "one-time code expired")
            if row["command_uuid"] != delivery["command_uuid"]:
                return _refuse(ScepRefusal.SCEP_REFUSAL_CODE_SUPERSEDED,
                               "one-time code superseded by a newer delivery")
            if operation == "PKIOperation":
                used = conn.execute(
                    "UPDATE scep_codes SET used_at = now() WHERE code_sha256 = %s "
                    "AND used_at IS NULL RETURNING 1", (code_hash(code),)).fetchone()
                if used is None:
                    return _refuse(ScepRefusal.SCEP_REFUSAL_CODE_USED,
                                   "one-time code already used")
            return Decision(True, upstream_url=ca["url"], ca_id=ca["id"],
                            max_concurrent_requests=ca["max_concurrent_requests"])

    def give_back(self, host_uuid: str, profile_uuid: str, ca_name: str, code: str) -> bool:
        """Make a code used up by AuthorizeScep(PKIOperation) usable again, if it belongs to this
        host, profile and CA, is still the delivery's current and pending attempt, and was used
        within GIVE_BACK_WINDOW_SECONDS."""
        with self._db.transaction() as conn:
            row = conn.execute(
                """UPDATE scep_codes c SET used_at = NULL
                   FROM host_profiles hp
                   WHERE c.code_sha256 = %s AND c.host_uuid = %s AND c.profile_uuid = %s
                     AND c.ca_name = %s AND c.used_at IS NOT NULL
                     AND c.used_at > now() - make_interval(secs => %s)
                     AND c.expires_at > now()
                     AND hp.host_uuid = c.host_uuid AND hp.profile_uuid = c.profile_uuid
                     AND hp.command_uuid = c.command_uuid AND hp.status = 'pending'
                     AND hp.operation_type = 'install'
                   RETURNING 1""",
                (code_hash(code), host_uuid, profile_uuid, ca_name,
                 GIVE_BACK_WINDOW_SECONDS)).fetchone()
            return row is not None


class ProfileAuthorityServicer(profile_authority_pb2_grpc.ProfileAuthorityServicer):
    def __init__(self, authority: ScepAuthority):
        self._authority = authority

    def AuthorizeScep(self, request, context):  # noqa: N802 - gRPC method name
        decision = self._authority.authorize(request.host_uuid, request.profile_uuid,
                                             request.ca_name, request.one_time_code,
                                             request.operation)
        return profile_authority_pb2.AuthorizeScepResponse(
            allowed=decision.allowed, reason=decision.reason, upstream_url=decision.upstream_url,
            ca_id=decision.ca_id, refusal=decision.refusal,
            max_concurrent_requests=decision.max_concurrent_requests)

    def GiveBackScepCode(self, request, context):  # noqa: N802 - gRPC method name
        given_back = self._authority.give_back(request.host_uuid, request.profile_uuid,
                                               request.ca_name, request.one_time_code)
        return profile_authority_pb2.GiveBackScepCodeResponse(given_back=given_back)
