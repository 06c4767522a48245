"""What hosts and CAs answered: command results move deliveries between statuses (README.md
"Delivery statuses and troubleshooting"). Every handler is idempotent: a result for a command
that is no longer the delivery's current one, or for a delivery already past that state, changes
nothing."""

from __future__ import annotations

import logging
from typing import Any

from mdmscep_common import mdm_commands
from mdmscep_common.bus import PoisonMessage
from mdmscep_common.one_time_codes import redact_codes

from .commander_client import CommanderClient
from .delivery import queue_profile_lists
from .issued_certificates import ScepDelivery, load_ca_certificates, match_certificates, uses_renewal_id
from .pacing import IssuancePacing
from .store import MAX_ATTEMPTS, DeliveryStore

log = logging.getLogger(__name__)

FAILURE_STATUSES = {"Error", "CommandFormatError"}
CA_FAILURES = {"scep_failure": "with a SCEP failure", "upstream_error": "with a server error",
               "timeout": "too late (timeout)"}
# An attempt that found the CA down (no HTTP answer) is given back: the profile is re-sent after a
# backoff that doubles up to CA_UNREACHABLE_MAX_DELAY, so an outage delays hosts instead of failing
# them. After CA_UNREACHABLE_MAX_RETRIES such retries (about a day) outages count as attempts again.
CA_UNREACHABLE_MAX_DELAY = 600.0
CA_UNREACHABLE_MAX_RETRIES = 150


def error_text(event: dict[str, Any]) -> str:
    """The device's own words: each ErrorChain entry's description (and code), with the one-time
    code of any proxy URL it quotes masked (mdm-endpoint masks them too; this is for results
    published before it did)."""
    parts = []
    for entry in event.get("error_chain") or []:
        if not isinstance(entry, dict):
            continue
        text = entry.get("USEnglishDescription") or entry.get("LocalizedDescription") or ""
        code = entry.get("ErrorCode")
        domain = entry.get("ErrorDomain")
        label = f"{domain} {code}" if domain and code is not None else ""
        parts.append(redact_codes(f"{text} ({label})" if label else str(text)))
    if not parts:
        return f"The host answered {event.get('status', 'Error')} without details"
    return "; ".join(p for p in parts if p)[:2000]


class ResultHandler:
    def __init__(self, db, store: DeliveryStore, commander: CommanderClient, retry_backoff: float,
                 pacing: IssuancePacing | None = None):
        self._db = db
        self._store = store
        self._commander = commander
        self._retry_backoff = retry_backoff
        self._pacing = pacing or IssuancePacing()

    def command_result(self, event: dict[str, Any]) -> None:
        try:
            host_uuid, command_uuid = event["host_uuid"], event["command_uuid"]
            status, request_type = event["status"], event.get("request_type", "")
        except KeyError as exc:
            raise PoisonMessage(f"command.result without {exc}") from None
        if status == "NotNow":
            return  # the host will run it later
        if request_type == mdm_commands.PROFILE_LIST:
            self._profile_list(host_uuid, command_uuid, status, event)
        elif request_type == mdm_commands.CERTIFICATE_LIST:
            self._certificate_list(host_uuid, status, event)
        elif request_type in (mdm_commands.INSTALL_PROFILE, mdm_commands.REMOVE_PROFILE):
            self._delivery_result(command_uuid, status, event)

    def _delivery_result(self, command_uuid: str, status: str, event: dict[str, Any]) -> None:
        with self._db.transaction() as conn:
            row = self._store.delivery_for_command(conn, command_uuid)
            if row is None or row["status"] != "pending":
                return  # superseded or already handled
            host, profile = row["host_uuid"], row["profile_uuid"]
            if status in FAILURE_STATUSES and row["operation_type"] == "install":
                # The host is done with this attempt: its codes are never needed again (the
                # re-send brings new ones), and a code its error quoted is dead from now on.
                self._store.expire_codes(conn, host, profile, command_uuid)
            if status == "Acknowledged":
                if row["operation_type"] == "remove":
                    self._store.delete(conn, host, profile)
                    return
                self._store.update(conn, host, profile, status="verifying", detail="",
                                   acknowledged_at=_now(conn))
                queue_profile_lists(conn, self._store, self._commander, [host])
            elif status in FAILURE_STATUSES:
                if row["ca_unreachable_command"] == command_uuid:
                    return  # the CA was down for this attempt: given back, re-send scheduled
                self._attempt_failed(conn, row, error_text(event), from_ca=False)

    def _attempt_failed(self, conn, row: dict[str, Any], text: str, from_ca: bool) -> None:
        """One attempt failed (the host's error, or the CA's answer to its PKIOperation): retry
        with a new code after backoff while attempts remain, else `failed`. The final detail
        keeps the CA's answer next to the host's words."""
        host, profile = row["host_uuid"], row["profile_uuid"]
        fields: dict[str, Any] = {}
        if from_ca:
            fields["ca_answer"] = text
        elif row.get("ca_answer"):
            text = f"{text} — {row['ca_answer']}"
        if row["attempts"] >= MAX_ATTEMPTS:
            self._store.update(conn, host, profile, status="failed", detail=text[:2000], **fields)
            log.info("delivery failed", extra={"host_uuid": host, "profile_uuid": profile})
            return
        delay = self._retry_backoff * 2 ** (row["attempts"] - 1)
        self._store.update(conn, host, profile, **fields,
                           detail=f"Attempt {row['attempts']} of {MAX_ATTEMPTS} failed, retrying: "
                                  f"{text}"[:2000],
                           next_attempt_at=_seconds_from_now(conn, delay))

    def _profile_list(self, host_uuid: str, command_uuid: str, status: str,
                      event: dict[str, Any]) -> None:
        if status != "Acknowledged":
            return  # the reconcile pass asks again later
        listed = {p.get("identifier") for p in event.get("profile_list") or [] if isinstance(p, dict)}
        with self._db.transaction() as conn:
            for row in self._store.being_verified(conn, host_uuid, command_uuid):
                if row["identifier"] in listed:
                    fields = {"listed_at": _now(conn)}
                    if row["status"] == "verified":
                        fields["verified_at"] = fields["listed_at"]  # re-checked now
                    self._store.update(conn, host_uuid, row["profile_uuid"], **fields)
                elif row["status"] == "verified":
                    self._store.update(conn, host_uuid, row["profile_uuid"], status="pending",
                                       attempts=0, ca_unreachable_retries=0,
                                       next_attempt_at=_now(conn),
                                       detail="Missing from the host's profile list; re-sent")
                else:
                    self._store.update(conn, host_uuid, row["profile_uuid"], status="pending",
                                       next_attempt_at=_now(conn),
                                       detail="Acknowledged but not in the host's profile list; "
                                              "re-sent")
            self._store.promote_verified(conn, host_uuid)

    def _certificate_list(self, host_uuid: str, status: str, event: dict[str, Any]) -> None:
        """Record which delivered SCEP profiles' certificates the host holds; a verified delivery
        whose certificate is gone is re-sent."""
        if status != "Acknowledged":
            return
        reported = [c for c in event.get("certificate_list") or [] if isinstance(c, dict)]
        with self._db.transaction() as conn:
            deliveries = [ScepDelivery(r["profile_uuid"], load_ca_certificates(r["ca_pem"]),
                                       uses_renewal_id(bytes(r["raw"])))
                          for r in self._store.scep_deliveries(conn, host_uuid)]
            held = match_certificates(reported, deliveries)
            self._store.replace_inventory(conn, host_uuid, held)
            holding = {h.profile_uuid for h in held}
            for row in self._store.verified_scep(conn, host_uuid):
                if row["profile_uuid"] not in holding:
                    self._store.update(conn, host_uuid, row["profile_uuid"], status="pending",
                                       attempts=0, ca_unreachable_retries=0,
                                       next_attempt_at=_now(conn),
                                       detail="The certificate is missing from the host; re-sent")
            self._store.promote_verified(conn, host_uuid)

    def host_checked_out(self, event: dict[str, Any]) -> None:
        host_uuid = event.get("host_uuid")
        if not isinstance(host_uuid, str):
            raise PoisonMessage("host.checked_out without host_uuid")
        with self._db.transaction() as conn:
            self._store.drop_host(conn, host_uuid)

    def resend(self, event: dict[str, Any]) -> None:
        """An admin asked for a fresh delivery (one host, or every failed host of a profile)."""
        profile = event.get("profile_uuid")
        host = event.get("host_uuid")
        if not isinstance(profile, str) or (host is not None and not isinstance(host, str)):
            raise PoisonMessage("delivery.resend without profile_uuid")
        with self._db.transaction() as conn:
            count = self._store.resend(conn, profile, host, only_failed=bool(event.get("only_failed")))
        log.info("re-send requested", extra={"profile_uuid": profile, "deliveries": count})

    def scep_result(self, event: dict[str, Any]) -> None:
        """The CA's answer to a host's PKIOperation. A refusal (SCEP FAILURE with its failInfo)
        or a 5xx uses up the attempt: the profile is re-sent with a new code after backoff, within
        the same budget of attempts as device errors. No answer at all (`ca_unreachable`: the CA
        is down) gives the attempt back (see CA_UNREACHABLE_MAX_DELAY). Every answer also moves
        the CA's issuance rate (pacing.py)."""
        host, profile = event.get("host_uuid"), event.get("profile_uuid")
        if not isinstance(host, str) or not isinstance(profile, str):
            raise PoisonMessage("scep.result without host_uuid/profile_uuid")
        with self._db.transaction() as conn:
            if event.get("outcome") in CA_FAILURES:
                self._ca_failure(conn, host, profile, event)
            # Last: it holds the CA's pacing row till commit.
            self._pacing.learn(conn, event)

    def _ca_failure(self, conn, host: str, profile: str, event: dict[str, Any]) -> None:
        outcome = event["outcome"]
        fail_info = f" failInfo {event['fail_info']}" if event.get("fail_info") else ""
        text = (f"The certificate authority {event.get('ca_name', '')} answered "
                f"{CA_FAILURES[outcome]}{fail_info}: {event.get('detail', '')}").strip(" :")
        row = self._store.delivery(conn, host, profile)
        if row is None or row["operation_type"] != "install":
            return
        if self._command_of(conn, row, event) != row["command_uuid"]:
            return  # about an older attempt (a late or redelivered event): a newer one is out
        if event.get("ca_unreachable") is True \
                and row["ca_unreachable_retries"] < CA_UNREACHABLE_MAX_RETRIES:
            self._ca_unreachable(conn, row, text)
        elif row["status"] == "pending":
            self._attempt_failed(conn, row, text, from_ca=True)

    def _command_of(self, conn, row: dict[str, Any], event: dict[str, Any]) -> str | None:
        """The attempt the event is about: the command its one-time code was issued with (an
        event without one is taken as about the current attempt)."""
        code = event.get("code_sha256")
        if not code:
            return row["command_uuid"]
        try:
            return self._store.command_of_code(conn, bytes.fromhex(code))
        except (TypeError, ValueError):
            raise PoisonMessage("scep.result with a malformed code_sha256") from None

    def _ca_unreachable(self, conn, row: dict[str, Any], text: str) -> None:
        """Give the current attempt back and re-send after the outage backoff. Once per attempt,
        whether the host's own Error for it came first (even one that ended the delivery
        `failed`) or comes later (then ignored)."""
        command = row["command_uuid"]
        if row["ca_unreachable_command"] == command or row["status"] not in ("pending", "failed"):
            return  # already given back (a redelivered event), or the host got there anyway
        retries = row["ca_unreachable_retries"]
        delay = min(self._retry_backoff * 2 ** min(retries, 16), CA_UNREACHABLE_MAX_DELAY)
        self._store.update(
            conn, row["host_uuid"], row["profile_uuid"], status="pending",
            attempts=max(row["attempts"] - 1, 0), ca_unreachable_command=command,
            ca_unreachable_retries=retries + 1, ca_answer=text,
            detail=f"{text}; retrying in {delay:.0f} s (an unreachable certificate authority does "
                   f"not use up the host's attempts)"[:2000],
            next_attempt_at=_seconds_from_now(conn, delay))
        log.info("certificate authority unreachable; attempt given back",
                 extra={"host_uuid": row["host_uuid"], "profile_uuid": row["profile_uuid"],
                        "retry_in_seconds": delay})


def _now(conn):
    return conn.execute("SELECT now() AS t").fetchone()["t"]


def _seconds_from_now(conn, seconds: float):
    return conn.execute("SELECT now() + make_interval(secs => %s) AS t", (seconds,)).fetchone()["t"]
