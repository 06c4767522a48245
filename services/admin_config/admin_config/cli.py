"""`mdmscep`: the admin CLI over the admin API (certificate authorities, profiles, hosts).

Server and token come from --server/--token or MDMSCEP_SERVER/MDMSCEP_TOKEN (ADMIN_API_TOKEN is
accepted too). Challenges are read from a prompt or stdin so they stay out of shell history.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

API = "/api/v1/fleet"


class CliError(Exception):
    pass


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class AdminApi:
    def __init__(self, server: str, token: str, timeout: float = 60.0):
        self._client = httpx.Client(base_url=server.rstrip("/") + API, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the admin API: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                reasons = "; ".join(f"{e['name']}: {e['reason']}" for e in body.get("errors", []))
                message = body.get("message", "") + (f" ({reasons})" if reasons else "")
            except ValueError:
                message = response.text.strip()[:300]
            raise CliError(f"{response.status_code}: {message}")
        return response.json() if response.content else None


def _challenge(args) -> str:
    if args.challenge_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("SCEP challenge: ")


def run(args, api: AdminApi) -> str:
    kind, action = args.kind, args.action
    if kind == "ca":
        if action == "list":
            return table(api.call("GET", "/certificate_authorities")["certificate_authorities"],
                         ["id", "name", "type"])
        if action == "add":
            body = {"name": args.name, "url": args.url, "challenge": _challenge(args)}
            ca = api.call("POST", "/certificate_authorities", json={"custom_scep_proxy": body})
            return f"added certificate authority {ca['name']} (id {ca['id']})"
        if action == "show":
            ca = api.call("GET", f"/certificate_authorities/{args.id}")
            return "\n".join(f"{k}: {v}" for k, v in ca.items())
        if action == "edit":
            body: dict[str, str] = {}
            if args.url:
                body["url"] = args.url
            if args.url or args.new_challenge:
                body["challenge"] = _challenge(args)
            api.call("PATCH", f"/certificate_authorities/{args.id}", json={"custom_scep_proxy": body})
            return f"edited certificate authority {args.id}; profiles using it are re-sent"
        api.call("DELETE", f"/certificate_authorities/{args.id}")
        return f"deleted certificate authority {args.id}"
    if kind == "profile":
        if action == "list":
            return table(api.call("GET", "/configuration_profiles")["profiles"],
                         ["profile_uuid", "name", "identifier", "created_at"])
        if action == "upload":
            path = Path(args.file)
            with path.open("rb") as f:
                answer = api.call("POST", "/configuration_profiles", files={"profile": (path.name, f)})
            return f"uploaded {path.name}: profile_uuid {answer['profile_uuid']}"
        api.call("DELETE", f"/configuration_profiles/{args.profile_uuid}")
        return f"deleted profile {args.profile_uuid}; hosts that have it get RemoveProfile"
    if kind == "host":
        if action == "list":
            return table(api.call("GET", "/hosts")["hosts"],
                         ["uuid", "serial_number", "enrolled", "last_seen_at"])
        if action == "certificates":
            rows = api.call("GET", f"/hosts/{args.host_uuid}/certificates")["certificates"]
            return table(rows, ["profile_name", "serial", "subject", "issuer", "not_after"])
        rows = api.call("GET", f"/hosts/{args.host_uuid}/configuration_profiles")["profiles"]
        return table(rows, ["name", "identifier", "operation_type", "status", "detail"])
    if kind == "certificates":
        params = {"per_page": args.limit}
        if args.expiring_within_days is not None:
            params["expiring_within_days"] = args.expiring_within_days
        rows = api.call("GET", "/certificates", params=params)["certificates"]
        return table(rows, ["host_uuid", "profile_name", "serial", "subject", "not_after"])
    activities = api.call("GET", "/activities", params={"per_page": args.limit})["activities"]
    for a in activities:
        a["details"] = json.dumps(a["details"], sort_keys=True)
    return table(activities, ["created_at", "type", "actor", "details"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdmscep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("MDMSCEP_SERVER", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("MDMSCEP_TOKEN")
                   or os.environ.get("ADMIN_API_TOKEN"))
    kinds = p.add_subparsers(dest="kind", required=True)

    ca = kinds.add_parser("ca", help="custom SCEP certificate authorities").add_subparsers(
        dest="action", required=True)
    ca.add_parser("list")
    add = ca.add_parser("add", help="add a CA (GetCACert must answer)")
    add.add_argument("name")
    add.add_argument("--url", required=True)
    add.add_argument("--challenge-stdin", action="store_true", help="read the challenge from stdin")
    ca.add_parser("show").add_argument("id", type=int)
    edit = ca.add_parser("edit", help="change the URL and/or challenge")
    edit.add_argument("id", type=int)
    edit.add_argument("--url")
    edit.add_argument("--new-challenge", action="store_true", help="set a new challenge")
    edit.add_argument("--challenge-stdin", action="store_true")
    ca.add_parser("delete").add_argument("id", type=int)

    profile = kinds.add_parser("profile", help="configuration profiles").add_subparsers(
        dest="action", required=True)
    profile.add_parser("list")
    profile.add_parser("upload").add_argument("file")
    profile.add_parser("delete").add_argument("profile_uuid")

    host = kinds.add_parser("host", help="hosts").add_subparsers(dest="action", required=True)
    host.add_parser("list")
    host.add_parser("profiles", help="a host's profile statuses").add_argument("host_uuid")
    host.add_parser("certificates", help="certificates a host holds").add_argument("host_uuid")

    certificates = kinds.add_parser("certificates", help="delivered certificates, soonest expiry first")
    certificates.add_argument("--expiring-within-days", type=float)
    certificates.add_argument("--limit", type=int, default=100)
    certificates.set_defaults(action="list")

    activity = kinds.add_parser("activity", help="the activity feed")
    activity.add_argument("action", choices=["list"])
    activity.add_argument("--limit", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.token:
        sys.exit("mdmscep: no token: pass --token or set MDMSCEP_TOKEN")
    try:
        print(run(args, AdminApi(args.server, args.token)))
    except CliError as exc:
        sys.exit(f"mdmscep: {exc}")
    except OSError as exc:
        sys.exit(f"mdmscep: {exc}")
