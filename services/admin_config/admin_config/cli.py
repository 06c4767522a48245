"""`mdmscep`: the admin CLI over the admin API (certificate authorities, profiles, hosts, teams,
labels).

Server and token come from --server/--token or MDMSCEP_SERVER/MDMSCEP_TOKEN (ADMIN_API_TOKEN is
accepted too). Challenges are read from a prompt or stdin so they stay out of shell history.

`mdmscep gitops apply FILE [--dry-run]` makes the server's CAs, teams, labels and profiles match a
YAML file in the shape of Fleet's GitOps default.yml (challenges from environment variables, profiles by
path); `mdmscep gitops export --dir DIR` writes today's state as one (README.md "GitOps").
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .roles import ROLES
from .terminal import printable

API = "/api/v1/fleet"


class CliError(Exception):
    pass


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[printable(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class AdminApi:
    def __init__(self, server: str, token: str, timeout: float = 60.0):
        self._client = httpx.Client(base_url=server.rstrip("/") + API, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})
        self.last: Any = {}

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"cannot reach the admin API: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                reasons = "; ".join(f"{e['name']}: {e['reason']}" for e in body.get("errors", []))
                message = body.get("message", "") + (f" ({reasons})" if reasons else "")
            except ValueError:
                message = response.text.strip()[:300]
            raise CliError(f"{response.status_code}: {printable(message)}")
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        self.last = response.json() if response.content else {}
        return self.last or None

    def download(self, path: str, **kwargs: Any) -> bytes:
        """A GET's body as bytes (a profile with alt=media)."""
        return self._send("GET", path, **kwargs).content


def _segment(value: str) -> str:
    """`value` as one path segment of an API URL: percent-encoded, so an argument cannot reach
    another route (`../api_tokens/x`) or put control characters in the request line."""
    return quote(value, safe="") if value not in (".", "..") else value.replace(".", "%2E")


def _limits(args) -> dict[str, Any]:
    limits = {}
    if getattr(args, "max_concurrent_requests", None) is not None:
        limits["max_concurrent_requests"] = args.max_concurrent_requests
    if getattr(args, "max_issuance_per_second", None) is not None:
        limits["max_issuance_per_second"] = args.max_issuance_per_second
    return limits


def _challenge(args) -> str:
    if args.challenge_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("SCEP challenge: ")


def run(args, api: AdminApi) -> str:
    result = dispatch(args, api)
    if args.json:
        # ensure_ascii: every control or non-ASCII character in the data appears as a \u escape,
        # never raw (scripts read the same strings back).
        return json.dumps(result.data, indent=2, sort_keys=True, ensure_ascii=True)
    return result.text


def _fields(data: dict[str, Any]) -> str:
    """`key: value` lines of a record from the API."""
    return "\n".join(f"{printable(k)}: {printable(v)}" for k, v in data.items())


class Result:
    """What a command answered: the API's data (for --json) and a readable rendering."""

    def __init__(self, data: Any, text: str):
        self.data = data
        self.text = text


def _table(data: Any, key: str, columns: list[str]) -> Result:
    rows = data[key]
    text = table(rows, columns)
    meta = data.get("meta")
    if meta and meta["total"] > len(rows):
        text += f"\n({len(rows)} of {meta['total']}; --page/--per-page for more)"
    return Result(data, text)


def _criteria(pairs: list[str]) -> dict[str, str]:
    """`key=value` arguments as a label's criteria (the server checks the keys)."""
    criteria = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--criteria takes key=value, not {pair!r}")
        criteria[key] = value
    return criteria


def _label_row(label: dict[str, Any]) -> dict[str, Any]:
    criteria = label.get("criteria") or {}
    return {**label, "type": label["label_membership_type"],
            "criteria": ", ".join(f"{k}={v}" for k, v in criteria.items()),
            "hosts": len(label["hosts"]) if label["label_membership_type"] == "manual" else "-"}


def _scope_fields(args) -> dict[str, Any]:
    """The upload's scope as multipart fields (absent when not given)."""
    fields: dict[str, Any] = {}
    if args.team is not None:
        fields["team_id"] = str(args.team)
    for option, field in (("include_all", "labels_include_all"),
                          ("include_any", "labels_include_any"),
                          ("exclude_any", "labels_exclude_any")):
        if getattr(args, option):
            fields[field] = getattr(args, option)
    return fields


def dispatch(args, api: AdminApi) -> Result:
    kind, action = args.kind, args.action
    paging = {"page": args.page, "per_page": args.per_page}
    if kind == "team":
        if action == "create":
            data = api.call("POST", "/teams", json={"name": args.name})
            return Result(data, f"created team {printable(data['team']['name'])} "
                                f"(id {data['team']['id']})")
        if action == "list":
            return _table(api.call("GET", "/teams", params=paging), "teams",
                          ["id", "name", "host_count"])
        api.call("DELETE", f"/teams/{args.id}")
        return Result({}, f"deleted team {args.id}; its profiles were deleted and its hosts are "
                          "in no team")
    if kind == "label":
        if action == "create":
            body: dict[str, Any] = {"name": args.name}
            if args.criteria:
                body["criteria"] = _criteria(args.criteria)
            else:
                body["hosts"] = args.host or []
            data = api.call("POST", "/labels", json=body)
            label = data["label"]
            return Result(data, f"created {label['label_membership_type']} label "
                                f"{printable(label['name'])} (id {label['id']})")
        if action == "list":
            data = api.call("GET", "/labels", params=paging)
            rows = {**data, "labels": [_label_row(r) for r in data["labels"]]}
            return Result(data, _table(rows, "labels",
                                       ["id", "name", "type", "hosts", "criteria"]).text)
        if action == "set-hosts":
            data = api.call("PATCH", f"/labels/{args.id}", json={"hosts": args.hosts})
            return Result(data, f"label {printable(data['label']['name'])} now has "
                                f"{len(data['label']['hosts'])} host(s)")
        api.call("DELETE", f"/labels/{args.id}")
        return Result({}, f"deleted label {args.id}")
    if kind == "host" and action == "transfer":
        data = api.call("POST", "/hosts/transfer",
                        json={"team_id": None if args.no_team else args.team,
                              "hosts": args.hosts})
        where = "no team" if args.no_team else f"team {args.team}"
        return Result(data, f"moved {data['moved']} of {data['hosts']} host(s) to {where} "
                            "(the others were there already)")
    if kind == "profile" and action == "upload":
        path = Path(args.file)
        with path.open("rb") as f:
            data = api.call("POST", "/configuration_profiles", files={"profile": (path.name, f)},
                            data=_scope_fields(args))
        return Result(data, f"uploaded {path.name}: profile_uuid {data['profile_uuid']}")
    if kind == "profile" and action == "list":
        params = {**paging, **({"team_id": args.team} if args.team is not None else {})}
        return _table(api.call("GET", "/configuration_profiles", params=params), "profiles",
                      ["profile_uuid", "name", "identifier", "team_id", "created_at"])
    if kind == "token":
        if action == "create":
            body = {"name": args.name, **({"role": args.role} if args.role else {})}
            data = api.call("POST", "/api_tokens", json=body)
            return Result(data, f"{printable(data['role'])} token for {printable(data['name'])} "
                                f"(shown once):\n{printable(data['token'])}")
        if action == "list":
            return _table(api.call("GET", "/api_tokens"), "api_tokens",
                          ["name", "role", "created_at", "last_used_at", "revoked_at"])
        api.call("DELETE", f"/api_tokens/{_segment(args.name)}")
        return Result({}, f"revoked {args.name}")
    if kind == "host" and action in ("show", "delete", "resend"):
        if action == "show":
            data = api.call("GET", f"/hosts/{_segment(args.host_uuid)}")
            return Result(data, _fields(data))
        if action == "delete":
            api.call("DELETE", f"/hosts/{_segment(args.host_uuid)}")
            return Result({}, f"deleted host {args.host_uuid}; it can enroll again")
        api.call("POST", f"/hosts/{_segment(args.host_uuid)}/configuration_profiles/"
                         f"{_segment(args.profile_uuid)}/resend")
        return Result({}, f"re-sending {args.profile_uuid} to {args.host_uuid}")
    if kind == "host" and action == "list":
        params = {**paging, **{k: v for k, v in (("status", args.status),
                                                  ("profile_uuid", args.profile_uuid),
                                                  ("query", args.query)) if v}}
        if args.team is not None:
            params["team_id"] = args.team
        return _table(api.call("GET", "/hosts", params=params), "hosts",
                      ["uuid", "serial_number", "enrolled", "last_seen_at", "team_id"])
    if kind == "profile" and action in ("replace", "summary", "hosts", "retry-failed"):
        if action == "replace":
            path = Path(args.file)
            with path.open("rb") as f:
                data = api.call("PUT", f"/configuration_profiles/{_segment(args.profile_uuid)}",
                                files={"profile": (path.name, f)})
            return Result(data, f"replaced {args.profile_uuid} with {path.name}; hosts get the new "
                                "content without a removal")
        if action == "summary":
            data = api.call("GET", f"/configuration_profiles/{_segment(args.profile_uuid)}/summary")
            return Result(data, "  ".join(f"{s}: {data[s]}" for s in
                                          ("pending", "verifying", "verified", "failed", "total")))
        if action == "hosts":
            params = {**paging, **({"status": args.status} if args.status else {})}
            return _table(api.call("GET", f"/configuration_profiles/{_segment(args.profile_uuid)}/hosts",
                                   params=params), "hosts",
                          ["host_uuid", "serial_number", "status", "detail"])
        data = api.call("POST", f"/configuration_profiles/{_segment(args.profile_uuid)}/retry_failed")
        return Result(data, f"retrying {data['hosts']} failed host(s)")
    if kind == "gitops":
        from . import gitops  # its YAML and validation imports only when used
        if action == "apply":
            data, text = gitops.apply(api, Path(args.file), dry_run=args.dry_run,
                                      force_challenges=args.force_challenges)
        else:
            data, text = gitops.export(api, Path(args.dir))
        return Result(data, text)
    if kind == "activity":
        params = {**paging, **{k: v for k, v in (("type", args.type), ("actor", args.actor)) if v}}
        data = api.call("GET", "/activities", params=params)
        rows = [{**a, "details": json.dumps(a["details"], sort_keys=True)} for a in data["activities"]]
        return _table({**data, "activities": rows}, "activities",
                      ["created_at", "type", "actor", "details"])
    text = legacy(args, api)
    return Result(api.last, text)  # the last answer is the command's data


def legacy(args, api: AdminApi) -> str:
    kind, action = args.kind, args.action
    if kind == "ca":
        if action == "list":
            return table(api.call("GET", "/certificate_authorities")["certificate_authorities"],
                         ["id", "name", "type"])
        if action == "stats":
            return _fields(api.call("GET", f"/certificate_authorities/{args.id}/stats"))
        if action == "add":
            body = {"name": args.name, "url": args.url, "challenge": _challenge(args),
                    **_limits(args)}
            ca = api.call("POST", "/certificate_authorities", json={"custom_scep_proxy": body})
            return f"added certificate authority {printable(ca['name'])} (id {ca['id']})"
        if action == "show":
            return _fields(api.call("GET", f"/certificate_authorities/{args.id}"))
        if action == "edit":
            body: dict[str, Any] = _limits(args)
            if args.url:
                body["url"] = args.url
            if args.url or args.new_challenge:
                body["challenge"] = _challenge(args)
            api.call("PATCH", f"/certificate_authorities/{args.id}", json={"custom_scep_proxy": body})
            return f"edited certificate authority {args.id}; profiles using it are re-sent"
        api.call("DELETE", f"/certificate_authorities/{args.id}")
        return f"deleted certificate authority {args.id}"
    if kind == "profile":
        api.call("DELETE", f"/configuration_profiles/{_segment(args.profile_uuid)}")
        return f"deleted profile {args.profile_uuid}; hosts that have it get RemoveProfile"
    if kind == "host":
        if action == "list":
            return table(api.call("GET", "/hosts")["hosts"],
                         ["uuid", "serial_number", "enrolled", "last_seen_at"])
        if action == "certificates":
            rows = api.call("GET", f"/hosts/{_segment(args.host_uuid)}/certificates")["certificates"]
            return table(rows, ["profile_name", "serial", "subject", "issuer", "not_after"])
        rows = api.call("GET", f"/hosts/{_segment(args.host_uuid)}/configuration_profiles")["profiles"]
        return table(rows, ["name", "identifier", "operation_type", "status", "detail"])
    if kind == "certificates":
        params = {"per_page": args.limit}
        if args.expiring_within_days is not None:
            params["expiring_within_days"] = args.expiring_within_days
        rows = api.call("GET", "/certificates", params=params)["certificates"]
        return table(rows, ["host_uuid", "profile_name", "serial", "subject", "not_after"])
    raise CliError(f"unknown command {kind} {action}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mdmscep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("MDMSCEP_SERVER", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("MDMSCEP_TOKEN")
                   or os.environ.get("ADMIN_API_TOKEN"))
    p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--per-page", type=int, default=100)
    kinds = p.add_subparsers(dest="kind", required=True)

    ca = kinds.add_parser("ca", help="custom SCEP certificate authorities").add_subparsers(
        dest="action", required=True)
    ca.add_parser("list")
    add = ca.add_parser("add", help="add a CA (GetCACert must answer)")
    add.add_argument("name")
    add.add_argument("--url", required=True)
    add.add_argument("--challenge-stdin", action="store_true", help="read the challenge from stdin")
    add.add_argument("--max-concurrent-requests", type=int)
    add.add_argument("--max-issuance-per-second", type=float)
    ca.add_parser("stats", help="the last hour at this CA").add_argument("id", type=int)
    ca.add_parser("show").add_argument("id", type=int)
    edit = ca.add_parser("edit", help="change the URL and/or challenge")
    edit.add_argument("id", type=int)
    edit.add_argument("--url")
    edit.add_argument("--new-challenge", action="store_true", help="set a new challenge")
    edit.add_argument("--challenge-stdin", action="store_true")
    edit.add_argument("--max-concurrent-requests", type=int)
    edit.add_argument("--max-issuance-per-second", type=float)
    ca.add_parser("delete").add_argument("id", type=int)

    profile = kinds.add_parser("profile", aliases=["profiles"], help="configuration profiles"
                               ).add_subparsers(dest="action", required=True)
    profile.add_parser("list").add_argument("--team", type=int, metavar="ID",
                                            help="only this team's profiles (0: of no team)")
    upload = profile.add_parser("upload", help="upload a profile, for the hosts of a team (or of "
                                               "no team) its label rule admits")
    upload.add_argument("file")
    upload.add_argument("--team", type=int, metavar="ID",
                        help="the team whose hosts get it (default, or 0: hosts in no team)")
    include = upload.add_mutually_exclusive_group()
    include.add_argument("--include-all", action="append", metavar="LABEL",
                         help="only hosts in every label given (repeat the option)")
    include.add_argument("--include-any", action="append", metavar="LABEL",
                         help="only hosts in at least one label given (repeat the option)")
    upload.add_argument("--exclude-any", action="append", metavar="LABEL",
                        help="not hosts in any label given (repeat the option)")
    profile.add_parser("delete").add_argument("profile_uuid")
    replace = profile.add_parser("replace", help="new content, same PayloadIdentifier, no removal")
    replace.add_argument("profile_uuid")
    replace.add_argument("file")
    profile.add_parser("summary", help="hosts per status").add_argument("profile_uuid")
    profile_hosts = profile.add_parser("hosts", help="the profile's hosts with details")
    profile_hosts.add_argument("profile_uuid")
    profile_hosts.add_argument("--status", choices=["pending", "verifying", "verified", "failed"])
    profile.add_parser("retry-failed", help="fresh delivery to every failed host").add_argument(
        "profile_uuid")

    host = kinds.add_parser("host", aliases=["hosts"], help="hosts").add_subparsers(
        dest="action", required=True)
    host_list = host.add_parser("list")
    host_list.add_argument("--status", choices=["pending", "verifying", "verified", "failed"])
    host_list.add_argument("--profile-uuid")
    host_list.add_argument("--query", help="part of the serial number or UUID")
    host_list.add_argument("--team", type=int, metavar="ID", help="hosts of this team (0: in no "
                                                                  "team)")
    transfer = host.add_parser("transfer", help="move hosts to a team, or to no team")
    to = transfer.add_mutually_exclusive_group(required=True)
    to.add_argument("--team", type=int, metavar="ID")
    to.add_argument("--no-team", action="store_true")
    transfer.add_argument("hosts", nargs="+", metavar="HOST", help="host UUIDs")
    host.add_parser("show").add_argument("host_uuid")
    host.add_parser("delete", help="forget a host (it can enroll again)").add_argument("host_uuid")
    resend = host.add_parser("resend", help="fresh delivery of one profile to one host")
    resend.add_argument("host_uuid")
    resend.add_argument("profile_uuid")
    host.add_parser("profiles", help="a host's profile statuses").add_argument("host_uuid")
    host.add_parser("certificates", help="certificates a host holds").add_argument("host_uuid")

    team = kinds.add_parser("team", aliases=["teams"], help="teams (a host is in one team or none)"
                            ).add_subparsers(dest="action", required=True)
    team.add_parser("list")
    team.add_parser("create").add_argument("name")
    team.add_parser("delete", help="delete a team: its profiles are deleted, its hosts go to no "
                                   "team").add_argument("id", type=int)

    label = kinds.add_parser("label", aliases=["labels"], help="labels (manual or dynamic)"
                             ).add_subparsers(dest="action", required=True)
    label.add_parser("list")
    label_create = label.add_parser("create", help="a manual label (--host) or a dynamic one "
                                                   "(--criteria)")
    label_create.add_argument("name")
    members = label_create.add_mutually_exclusive_group(required=True)
    members.add_argument("--host", action="append", metavar="HOST",
                         help="a host of the manual label (repeat the option)")
    members.add_argument("--criteria", action="append", metavar="KEY=VALUE",
                         help="a criterion of the dynamic label (repeat the option): "
                              "serial_number_prefix, model, product_name, platform, "
                              "os_version_at_least, os_version_below")
    set_hosts = label.add_parser("set-hosts", help="a manual label's hosts become these")
    set_hosts.add_argument("id", type=int)
    set_hosts.add_argument("hosts", nargs="*", metavar="HOST")
    label.add_parser("delete", help="delete a label no profile names").add_argument("id",
                                                                                    type=int)

    certificates = kinds.add_parser("certificates", help="delivered certificates, soonest expiry first")
    certificates.add_argument("--expiring-within-days", type=float)
    certificates.add_argument("--limit", type=int, default=100)
    certificates.set_defaults(action="list")

    activity = kinds.add_parser("activity", help="the activity feed")
    activity.add_argument("action", choices=["list"])
    activity.add_argument("--type")
    activity.add_argument("--actor")

    gitops = kinds.add_parser("gitops", help="make the server match a YAML file (Fleet's GitOps "
                                             "shape), or write today's state as one"
                              ).add_subparsers(dest="action", required=True)
    gitops_apply = gitops.add_parser(
        "apply", help="make the server's CAs, teams, labels and profiles match FILE",
        description="Make the server's certificate authorities, teams, labels and profiles "
                    "match FILE (org_settings.integrations.custom_scep_proxy, teams, labels, "
                    "controls.macos_settings.custom_settings with each profile's team and "
                    "label rule). Everything is checked first, nothing is changed on a "
                    "problem. Profiles and CAs the file does not list are deleted (a CA only "
                    "once no profile uses it); so are teams and labels when the file has "
                    "`teams` / `labels`. A second apply says 'no changes'.")
    gitops_apply.add_argument("file", help="the YAML file (profile paths are relative to it)")
    gitops_apply.add_argument("--dry-run", action="store_true",
                              help="print the changes it would make, make none")
    gitops_apply.add_argument("--force-challenges", action="store_true",
                              help="send every CA's challenge from its environment variable (the "
                                   "server never shows one, so apply otherwise sends it only "
                                   "when it adds a CA or changes its URL)")
    gitops.add_parser("export", help="write today's state: DIR/default.yml, DIR/profiles/"
                      ).add_argument("--dir", required=True)

    token = kinds.add_parser("token", help="admin API tokens").add_subparsers(dest="action",
                                                                              required=True)
    token_create = token.add_parser("create", help="create a token (printed once)")
    token_create.add_argument("name")
    token_create.add_argument("--role", choices=ROLES,
                              help="observer (reads; the API's default), maintainer (also "
                                   "profiles), admin (everything)")
    token.add_parser("list")
    token.add_parser("revoke").add_argument("name")
    return p


# The plural spellings of kinds (`mdmscep teams list`) are aliases of the singular ones.
KIND_ALIASES = {"teams": "team", "labels": "label", "hosts": "host", "profiles": "profile"}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.kind = KIND_ALIASES.get(args.kind, args.kind)
    if not args.token:
        sys.exit("mdmscep: no token: pass --token or set MDMSCEP_TOKEN")
    # Everything printed passes printable() (admin_config/terminal.py): values are escaped where
    # they are laid out, and this catches whatever else carries server or host data.
    try:
        print(printable(run(args, AdminApi(args.server, args.token)), keep_newlines=True))
    except CliError as exc:
        problems = getattr(exc, "problems", None)  # gitops: one line each, escaped one by one
        if problems:
            sys.exit("mdmscep: refused; nothing was changed:\n"
                     + "\n".join(f"  {printable(p)}" for p in problems))
        sys.exit(f"mdmscep: {printable(exc)}")
    except OSError as exc:
        sys.exit(f"mdmscep: {printable(exc)}")
