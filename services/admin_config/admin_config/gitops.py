"""`mdmscep gitops`: make the server match a YAML file (`apply`), or write today's state as one
(`export`). The file has the shape of Fleet's GitOps `default.yml` where it fits (README.md
"GitOps"):

    org_settings:
      integrations:
        custom_scep_proxy:
          - name: Test_SCEP
            url: http://ca.example:2016/scep
            challenge: $TEST_SCEP_CHALLENGE   # an environment variable, never the secret
            max_concurrent_requests: 4        # optional, mdmscep's own (default 4)
            max_issuance_per_second: null     # optional, mdmscep's own (default null)
    teams:                                    # mdmscep's: the teams, by name
      - name: Engineering
    labels:                                   # Fleet's top-level labels
      - name: Pilot
        label_membership_type: manual         # optional; manual: hosts, dynamic: criteria
        hosts: [6A0F0F0E-...]                 # host UUIDs
      - name: Sonoma Macs
        criteria: {platform: darwin, os_version_at_least: "14"}   # label_criteria.py keys
    controls:
      macos_settings:
        custom_settings:
          - path: profiles/wifi.mobileconfig  # relative to the file
            team: Engineering                 # optional: else for hosts in no team
            labels_include_any: [Pilot]       # Fleet's; or labels_include_all; labels_exclude_any

Everything is read and checked before the server is changed: the YAML, every key, each
challenge's environment variable, each profile (with the admin API's own validation,
profile_validation.py, against the CAs of the file and of the server), each team and label a
profile names (the file's, or the server's when the file has no `teams` / `labels`), each host a
label newly lists. Then the plan, in this order: CAs to add or edit, teams to add, labels to add
or whose hosts to set, profiles to delete (not listed, or whose label rule changed), labels to
delete (not listed, or whose criteria changed: deleted and added again), profiles to upload or
replace (matched by team and PayloadIdentifier, compared byte for byte), teams to delete, CAs
neither listed nor used any more to delete. So what a change needs exists before it, and goes
after it.

`teams` and `labels` are the whole truth when given (empty: none); a file without them leaves
the server's teams and labels alone. Host membership of teams is not the file's: hosts are moved
with `mdmscep host transfer`. Fleet's team files (`teams/<name>.yml`: `name`, `team_settings`)
are refused: teams are listed here and a profile names its team.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mdmscep_common import label_criteria

from .certificate_authorities import (
    validate_challenge,
    validate_limits,
    validate_name,
    validate_url,
)
from .cli import CliError, _segment
from .configuration_profiles import INCLUDE_FIELDS
from .errors import ApiError
from .profile_validation import validate_profile
from .teams import checked_name

MAX_FILE_BYTES = 1 << 20  # a GitOps file names its profiles by path; 1 MiB is generous
MAX_NODES = 50_000  # YAML nodes: thousands of profiles, not a billion laughs
MAX_DEPTH = 32  # the shape nests 5 deep
# The admin API takes bodies up to 2 MiB (app.py MAX_BODY_BYTES), multipart framing included.
MAX_PROFILE_BYTES = (2 << 20) - (64 << 10)
MAX_PROBLEMS = 50
MAX_PROBLEM_CHARS = 1000  # a problem may quote the file (a key, a YAML error's context)
DEFAULT_FILE = "default.yml"
PROFILES_DIR = "profiles"
PER_PAGE = 1000

CAS_WHERE = "org_settings.integrations.custom_scep_proxy"
PROFILES_WHERE = "controls.macos_settings.custom_settings"
TEAM_FILE = ("Fleet's team files are not supported (this looks like one): list teams under "
             "`teams` and give each profile its `team`")
# `$NAME` or `${NAME}`, the whole value: a challenge is only ever a reference.
_ENV_REFERENCE = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")
LABEL_KEYS = ("labels_include_all", "labels_include_any", "labels_exclude_any")
# Keys Fleet's default.yml must have that mdmscep does not manage: accepted when empty.
UNMANAGED_TOP_LEVEL = ("policies", "queries", "agent_options", "software")


class GitOpsError(CliError):
    """The file cannot be applied (or exported); nothing was changed. One line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = [p[:MAX_PROBLEM_CHARS] for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            self.problems.append(f"... and {len(problems) - MAX_PROBLEMS} more")
        super().__init__("; ".join(self.problems))


# --- reading the file -------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, which also refuses what a GitOps file has no use for and an
    attacker could use: anchors and aliases (a few lines that expand to a huge document), more
    than MAX_NODES nodes or MAX_DEPTH levels (composing recurses), and a key written twice in one
    mapping (YAML would keep the last one silently)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise GitOpsError([f"line {line}: YAML anchors and aliases are not accepted"])
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise GitOpsError([f"line {line}: more than {MAX_NODES} YAML nodes"])
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise GitOpsError([f"line {line}: nested deeper than {MAX_DEPTH} levels"])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise GitOpsError([f"line {key_node.start_mark.line + 1}: key "
                                       f"{key_node.value!r} appears twice"])
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def parse_yaml(raw: bytes, name: str) -> Any:
    loader = None
    try:
        loader = _Loader(raw)  # decodes the start already: may refuse the bytes
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise GitOpsError([f"{name}: not valid YAML: {exc}"]) from None
    except GitOpsError as exc:
        raise GitOpsError([f"{name}: {p}" for p in exc.problems]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    if not path.is_file():
        raise GitOpsError([f"{what} {path}: " + ("not a file" if path.exists() else "no such file")])
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise GitOpsError([f"{what} {path}: over {limit} bytes"])
    return raw


@dataclass(frozen=True)
class CertificateAuthoritySpec:
    name: str
    url: str
    challenge_variable: str
    max_concurrent_requests: int
    max_issuance_per_second: float | None
    where: str

    def limits(self) -> tuple[int, float | None]:
        return self.max_concurrent_requests, self.max_issuance_per_second


@dataclass(frozen=True)
class ProfileSpec:
    path: str  # as written in the file
    raw: bytes
    where: str
    # The label rule, as Fleet writes it: field (LABEL_KEYS) → label names.
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    team: str | None = None  # None: for hosts in no team

    @property
    def label(self) -> str:
        return f"{self.where} ({self.path})"

    def rule(self) -> dict[str, list[str]]:
        """The label rule as the API shows a profile's: every field, names sorted."""
        return {key: sorted(self.labels.get(key, ())) for key in LABEL_KEYS}


@dataclass(frozen=True)
class LabelSpec:
    name: str
    criteria: dict[str, str] | None  # None: a manual label
    hosts: tuple[str, ...]
    where: str


@dataclass
class GitOpsFile:
    path: Path
    certificate_authorities: list[CertificateAuthoritySpec]
    profiles: list[ProfileSpec]
    challenges: dict[str, str] = field(repr=False, default_factory=dict)  # CA name → secret
    teams: list[str] | None = None  # None: the file leaves teams alone
    labels: list[LabelSpec] | None = None  # None: the file leaves labels alone


class _Reader:
    """Walks the parsed file, collecting every problem before any is reported."""

    def __init__(self, path: Path, environ: Mapping[str, str]):
        self.path = path
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}" if where else text)

    def mapping(self, value: Any, where: str, known: tuple[str, ...],
                unsupported: Mapping[str, str] | None = None) -> dict[str, Any]:
        """`value` as a mapping (null: empty) with only `known` keys; `unsupported` keys are
        refused with their reason, any other key as unknown."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, "must be a mapping")
            return {}
        out = {}
        for key, item in value.items():
            at = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str):
                self.problem(where, f"key {key!r} is not a string")
            elif key in known:
                out[key] = item
            elif unsupported and key in unsupported:
                self.problem(at, unsupported[key])
            else:
                self.problem(at, f"unknown key (known here: {', '.join(known)})")
        return out

    def sequence(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, "must be a list")
            return []
        return value

    def string(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.problem(where, "must be a non-empty string")
            return None
        return value

    def api_check(self, where: str, check, *args):
        """The admin API's own validation of a field: its message on failure."""
        try:
            return check(*args)
        except ApiError as exc:
            self.problem(where, exc.message)
            return None


def load(path: Path, environ: Mapping[str, str] | None = None) -> GitOpsFile:
    """The file at `path`, checked: its YAML, every key, the CAs (fields as the admin API checks
    them, each challenge's environment variable set), each profile read from its path. Raises
    GitOpsError naming every problem; reads nothing from the server."""
    environ = os.environ if environ is None else environ
    doc = parse_yaml(_read_bounded(path, MAX_FILE_BYTES, "GitOps file"), str(path))
    r = _Reader(path, environ)
    if not isinstance(doc, dict):
        raise GitOpsError([f"{path}: must be a YAML mapping (org_settings, controls)"])
    # Fleet requires both keys in default.yml; so does mdmscep: a file that leaves one out
    # would otherwise delete everything it covers. Empty (`controls:`) means none.
    for key in ("org_settings", "controls"):
        if key not in doc:
            r.problem(key, "missing (write it empty for none: GitOps deletes what the file "
                           "does not list)")
    top = r.mapping(doc, "", ("org_settings", "controls", "teams", "labels",
                              *UNMANAGED_TOP_LEVEL),
                    {"name": TEAM_FILE, "team_settings": TEAM_FILE})
    for key in UNMANAGED_TOP_LEVEL:
        if top.get(key) not in (None, [], {}):
            r.problem(key, "not managed by mdmscep (certificate authorities and profiles only): "
                           "leave it empty")
    org = r.mapping(top.get("org_settings"), "org_settings", ("integrations",))
    integrations = r.mapping(org.get("integrations"), "org_settings.integrations",
                             ("custom_scep_proxy",))
    cas, challenges = _certificate_authorities(r, integrations.get("custom_scep_proxy"))
    controls = r.mapping(top.get("controls"), "controls", ("macos_settings",))
    macos = r.mapping(controls.get("macos_settings"), "controls.macos_settings",
                      ("custom_settings",))
    profiles = _profiles(r, macos.get("custom_settings"))
    teams = _teams(r, top["teams"]) if "teams" in top else None
    labels = _labels(r, top["labels"]) if "labels" in top else None
    if r.problems:
        raise GitOpsError([f"{path}: {p}" for p in r.problems])
    return GitOpsFile(path, cas, profiles, challenges, teams, labels)


def _teams(r: _Reader, value: Any) -> list[str]:
    names: list[str] = []
    for i, item in enumerate(r.sequence(value, "teams")):
        where = f"teams[{i}]"
        entry = r.mapping(item, where, ("name",))
        if entry.get("name") is None:
            r.problem(f"{where}.name", "missing")
            continue
        name = r.api_check(f"{where}.name", checked_name, entry["name"], "team")
        if name is None:
            continue
        if name in names:
            r.problem(f"{where}.name", f"a second team named {name}")
        else:
            names.append(name)
    return names


def _labels(r: _Reader, value: Any) -> list[LabelSpec]:
    labels: list[LabelSpec] = []
    names: set[str] = set()
    for i, item in enumerate(r.sequence(value, "labels")):
        where = f"labels[{i}]"
        entry = r.mapping(item, where, ("name", "label_membership_type", "hosts", "criteria"),
                          {"query": "osquery labels are not supported: a dynamic label states "
                                    "criteria over host facts",
                           "platform": "a dynamic label's platform is one of its criteria"})
        name = None
        if entry.get("name") is None:
            r.problem(f"{where}.name", "missing")
        else:
            name = r.api_check(f"{where}.name", checked_name, entry["name"], "label")
        if name is not None:
            if name in names:
                r.problem(f"{where}.name", f"a second label named {name}")
            names.add(name)
        kind = entry.get("label_membership_type")
        if kind is not None and kind not in ("manual", "dynamic"):
            r.problem(f"{where}.label_membership_type", "must be manual or dynamic")
        criteria = entry.get("criteria")
        if criteria is not None and "hosts" in entry:
            r.problem(where, "a label is manual (hosts) or dynamic (criteria), not both")
            continue
        if criteria is None and kind == "dynamic":
            r.problem(f"{where}.criteria", "missing (a dynamic label states criteria)")
            continue
        if criteria is not None:
            if kind == "manual":
                r.problem(f"{where}.label_membership_type", "a label with criteria is dynamic")
            try:
                criteria = label_criteria.parse(criteria)
            except label_criteria.InvalidCriteria as exc:
                hint = (' (quote versions: "14.10")' if isinstance(criteria, dict) and
                        isinstance(criteria.get(exc.key), int | float) else "")
                r.problem(f"{where}.criteria", f"{exc}{hint}")
                continue
            hosts: tuple[str, ...] = ()
        else:
            listed = [r.string(h, f"{where}.hosts[{j}]")
                      for j, h in enumerate(r.sequence(entry.get("hosts"), f"{where}.hosts"))]
            hosts = tuple(sorted({h for h in listed if h is not None}))
        if name is not None:
            labels.append(LabelSpec(name, criteria, hosts, where))
    return labels


def _certificate_authorities(r: _Reader, value: Any
                             ) -> tuple[list[CertificateAuthoritySpec], dict[str, str]]:
    cas: list[CertificateAuthoritySpec] = []
    challenges: dict[str, str] = {}
    names: set[str] = set()
    for i, item in enumerate(r.sequence(value, CAS_WHERE)):
        where = f"{CAS_WHERE}[{i}]"
        entry = r.mapping(item, where, ("name", "url", "challenge", "max_concurrent_requests",
                                        "max_issuance_per_second"))
        for key in ("name", "url", "challenge"):
            if entry.get(key) is None:
                r.problem(f"{where}.{key}", "missing")
        name = url = variable = None
        if entry.get("name") is not None:
            name = r.api_check(f"{where}.name", validate_name, entry["name"])
        if name is not None:
            if name in names:
                r.problem(f"{where}.name", f"a second certificate authority named {name}")
            names.add(name)
        if entry.get("url") is not None:
            url = r.api_check(f"{where}.url", validate_url, entry["url"])
        limits = r.api_check(where, validate_limits, entry, None)
        if entry.get("challenge") is not None:
            variable = _challenge_variable(r, f"{where}.challenge", entry["challenge"])
        secret = None
        if variable is not None:
            if variable not in r.environ:
                r.problem(f"{where}.challenge", f"environment variable {variable} is not set")
            else:
                secret = r.api_check(f"{where}.challenge (${variable})", validate_challenge,
                                     r.environ[variable])
        if None in (name, url, limits, variable, secret):
            continue
        cas.append(CertificateAuthoritySpec(name, url, variable, *limits, where))
        challenges[name] = secret
    return cas, challenges


def _challenge_variable(r: _Reader, where: str, value: Any) -> str | None:
    match = _ENV_REFERENCE.match(value) if isinstance(value, str) else None
    if match is None:
        # Not echoed: it may be the secret itself.
        r.problem(where, "must be a reference to an environment variable ($NAME or ${NAME}); "
                         "a challenge is never written in the file")
        return None
    variable = match.group(1) or match.group(2)
    if variable.startswith("FLEET_VAR_"):
        r.problem(where, "FLEET_VAR_ variables are the server's, rendered into profiles; "
                         "name an environment variable of your own")
        return None
    return variable


def _profiles(r: _Reader, value: Any) -> list[ProfileSpec]:
    profiles: list[ProfileSpec] = []
    paths: set[Path] = set()
    base = r.path.parent
    for i, item in enumerate(r.sequence(value, PROFILES_WHERE)):
        where = f"{PROFILES_WHERE}[{i}]"
        entry = r.mapping(item, where, ("path", "team", *LABEL_KEYS))
        written = r.string(entry.get("path"), f"{where}.path")
        team = r.string(entry["team"], f"{where}.team") if entry.get("team") is not None else None
        labels: dict[str, tuple[str, ...]] = {}
        seen: dict[str, str] = {}
        for key in LABEL_KEYS:
            if key in entry:
                names = [r.string(n, f"{where}.{key}[{j}]")
                         for j, n in enumerate(r.sequence(entry[key], f"{where}.{key}"))]
                for name in names:
                    if name is not None and seen.setdefault(name, key) != key:
                        r.problem(where, f"label {name} is in both {seen[name]} and {key}")
                kept = tuple(dict.fromkeys(n for n in names if n is not None))
                if kept:
                    labels[key] = kept
        if all(key in labels for key in INCLUDE_FIELDS):
            r.problem(where, f"only one of {' and '.join(INCLUDE_FIELDS)} may be given")
        if written is None:
            continue
        file = (base / written).resolve()
        if file in paths:
            r.problem(f"{where}.path", f"{written} is listed twice")
            continue
        paths.add(file)
        try:
            raw = _read_bounded(file, MAX_PROFILE_BYTES, "profile")
        except GitOpsError as exc:
            r.problem(f"{where}.path", exc.problems[0])
            continue
        except OSError as exc:
            r.problem(f"{where}.path", f"cannot read {written}: {exc.strerror or exc}")
            continue
        profiles.append(ProfileSpec(written, raw, where, labels, team))
    return profiles


# --- the server's state and the plan ----------------------------------------------------------

def _all(api, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 0
    while True:
        data = api.call("GET", path, params={"page": page, "per_page": PER_PAGE})
        items += data[key]
        if not data[key] or len(items) >= data["meta"]["total"]:
            return items
        page += 1


@dataclass
class ServerState:
    cas: dict[str, dict[str, Any]]  # name → the CA's detail (url, limits; challenge masked)
    # (team name or None, PayloadIdentifier) → summary (profile_uuid, name, team_id, labels_*)
    profiles: dict[tuple[str | None, str], dict[str, Any]]
    teams: dict[str, int] = field(default_factory=dict)  # name → id
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → the API's label


def read_server(api) -> ServerState:
    cas = {}
    for summary in _all(api, "/certificate_authorities", "certificate_authorities"):
        if summary["type"] != "custom_scep_proxy":
            continue  # another kind of CA is not the file's to add, change or delete
        detail = api.call("GET", f"/certificate_authorities/{int(summary['id'])}")
        cas[detail["name"]] = detail
    teams = read_teams(api)
    names = {i: name for name, i in teams.items()}
    profiles = {(names.get(p["team_id"]) if p.get("team_id") is not None else None,
                 p["identifier"]): p
                for p in _all(api, "/configuration_profiles", "profiles")}
    labels = {label["name"]: label for label in _all(api, "/labels", "labels")}
    return ServerState(cas, profiles, teams, labels)


ADD, EDIT, DELETE = "add", "edit", "delete"
_DONE = {ADD: "added", EDIT: "edited", DELETE: "deleted"}
_SIGN = {ADD: "+", EDIT: "~", DELETE: "-"}


@dataclass(frozen=True)
class Change:
    action: str  # add | edit | delete
    kind: str  # "certificate authority" | "team" | "label" | "profile"
    subject: str  # the CA's, team's or label's name, the profile's PayloadIdentifier
    detail: str
    method: str
    path: str
    request: dict[str, Any] = field(repr=False, default_factory=dict)  # may hold a challenge
    team: str | None = None  # a profile upload's team, by name (its id may be made by apply)

    def line(self, done: bool = False) -> str:
        verb = _DONE[self.action] if done else self.action
        subject = self.subject + (f" (team {self.team})" if self.team else "")
        text = f"{verb} {self.kind} {subject}" + (f": {self.detail}" if self.detail else "")
        return text if done else f"{_SIGN[self.action]} {text}"

    def summary(self) -> dict[str, Any]:
        return {"action": self.action, "kind": self.kind, "subject": self.subject,
                "detail": self.detail, "team": self.team}


@dataclass
class Plan:
    changes: list[Change]
    notes: list[str]


def _where(team: str | None) -> str:
    return f"team {team}" if team else "no team"


def _label_body(spec: LabelSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"name": spec.name}
    if spec.criteria is not None:
        body["criteria"] = spec.criteria
    else:
        body["hosts"] = list(spec.hosts)
    return body


def _label_matches(spec: LabelSpec, current: dict[str, Any]) -> tuple[bool, bool]:
    """(same kind and criteria, same hosts) of a file's label and the server's."""
    if spec.criteria is not None:
        return current.get("criteria") == spec.criteria, True
    return current.get("criteria") is None, sorted(current.get("hosts", [])) == list(spec.hosts)


def _host_exists(api, host_uuid: str) -> bool:
    try:
        api.call("GET", f"/hosts/{_segment(host_uuid)}")
    except CliError as exc:
        if str(exc).startswith("404:"):
            return False
        raise
    return True


def plan(source: GitOpsFile, server: ServerState, api, force_challenges: bool = False) -> Plan:
    """What makes the server match `source`: checks each profile as the admin API will (CAs
    from the file or the server), each team and label a profile names, each host a label newly
    lists; compares matched profiles byte for byte and label rule by label rule. Raises
    GitOpsError before anything is changed."""
    file_cas = {ca.name: ca for ca in source.certificate_authorities}
    teams = set(source.teams if source.teams is not None else server.teams)
    file_labels = ({spec.name: spec for spec in source.labels} if source.labels is not None
                   else None)
    labels = set(file_labels if file_labels is not None else server.labels)
    problems: list[str] = []
    validated = []  # (spec, ValidatedProfile)
    identifiers: dict[tuple[str | None, str], str] = {}
    for spec in source.profiles:
        try:
            # Which CAs it names, checked below with a GitOps message.
            profile = validate_profile(spec.raw, lambda _name: True)
        except ApiError as exc:
            problems.append(f"{spec.label}: {exc.message}")
            continue
        for name in sorted(profile.ca_names):
            if name not in file_cas and name not in server.cas:
                problems.append(f"{spec.label}: names certificate authority {name}, which is "
                                f"neither in {CAS_WHERE} nor on the server")
        key = (spec.team, profile.identifier)
        if key in identifiers:
            problems.append(f"{spec.label}: PayloadIdentifier {profile.identifier} is also "
                            f"{identifiers[key]}'s" + (f" in team {spec.team}" if spec.team
                                                        else ""))
        identifiers[key] = spec.path
        if spec.team is not None and spec.team not in teams:
            problems.append(f"{spec.label}: names team {spec.team}, which is not " + (
                "in teams" if source.teams is not None else "on the server"))
        for field_name, names in spec.labels.items():
            unknown = [n for n in names if n not in labels]
            if unknown:
                problems.append(f"{spec.label}: {field_name} names unknown label(s) "
                                f"{', '.join(unknown)} (" + ("not in labels)" if file_labels
                                                             is not None else "not on the "
                                                             "server)"))
        validated.append((spec, profile))
    checked_hosts: dict[str, bool] = {}
    for spec in (file_labels or {}).values():
        current = server.labels.get(spec.name)
        known = set(current.get("hosts", [])) if current and current.get("criteria") is None \
            else set()
        for host in spec.hosts:
            if host not in known and api is not None:
                if host not in checked_hosts:
                    checked_hosts[host] = _host_exists(api, host)
                if not checked_hosts[host]:
                    problems.append(f"{spec.where} ({spec.name}): host {host} is not enrolled "
                                    "(unknown to the server)")
    if problems:
        raise GitOpsError([f"{source.path}: {p}" for p in problems])

    changes: list[Change] = []
    notes: list[str] = []
    for ca in source.certificate_authorities:
        changes += _ca_change(ca, server.cas.get(ca.name), source.challenges[ca.name],
                              force_challenges)
    for name in source.teams or []:
        if name not in server.teams:
            changes.append(Change(ADD, "team", name, "", "POST", "/teams",
                                  {"json": {"name": name}}))
    # Labels: added, their hosts set; those whose kind or criteria changed are deleted and
    # added again, after the profiles naming them are deleted (and before they are uploaded).
    recreated: set[str] = set()
    label_adds: list[Change] = []
    label_deletes: list[Change] = []
    for spec in (file_labels or {}).values():
        current = server.labels.get(spec.name)
        what = (f"manual, {len(spec.hosts)} host(s)" if spec.criteria is None
                else "dynamic: " + ", ".join(f"{k}={v}" for k, v in spec.criteria.items()))
        add = Change(ADD, "label", spec.name, what, "POST", "/labels",
                     {"json": _label_body(spec)})
        if current is None:
            changes.append(add)
            continue
        same_rule, same_hosts = _label_matches(spec, current)
        if not same_rule:
            recreated.add(spec.name)
            label_deletes.append(Change(DELETE, "label", spec.name,
                                        "its kind or criteria changed: added again", "DELETE",
                                        f"/labels/{int(current['id'])}"))
            label_adds.append(add)
        elif not same_hosts:
            changes.append(Change(EDIT, "label", spec.name, f"hosts set ({len(spec.hosts)})",
                                  "PATCH", f"/labels/{int(current['id'])}",
                                  {"json": {"hosts": list(spec.hosts)}}))
    uploads: list[Change] = []
    for spec, profile in validated:
        key = (spec.team, profile.identifier)
        fields = {k: list(v) for k, v in spec.labels.items()}
        upload = {"files": {"profile": (Path(spec.path).name, spec.raw)}, "data": fields}
        current = server.profiles.get(key)
        if current is None:
            uploads.append(Change(ADD, "profile", profile.identifier, f"from {spec.path}",
                                  "POST", "/configuration_profiles", upload, team=spec.team))
            continue
        path = f"/configuration_profiles/{_segment(current['profile_uuid'])}"
        rule = {k: sorted(current.get(k, [])) for k in LABEL_KEYS}
        if rule != spec.rule() or recreated & {n for names in spec.labels.values()
                                                 for n in names}:
            # The API keeps a profile's scope: a new rule is a new upload.
            changes.append(Change(DELETE, "profile", profile.identifier,
                                  "its label rule changed: uploaded again (hosts it no longer "
                                  "admits get RemoveProfile)", "DELETE", path, team=spec.team))
            uploads.append(Change(ADD, "profile", profile.identifier,
                                  f"from {spec.path}, with its new label rule", "POST",
                                  "/configuration_profiles", upload, team=spec.team))
            continue
        if api.download(path, params={"alt": "media"}) != spec.raw:
            uploads.append(Change(EDIT, "profile", profile.identifier,
                                  f"new content from {spec.path} (replaced in place)", "PUT",
                                  path, {"files": upload["files"]}, team=spec.team))
    for key, current in server.profiles.items():
        if key not in identifiers:
            changes.append(Change(DELETE, "profile", key[1],
                                  "not in the file (hosts get RemoveProfile)", "DELETE",
                                  f"/configuration_profiles/{_segment(current['profile_uuid'])}",
                                  team=key[0]))
    changes += label_deletes
    if file_labels is not None:
        for name, current in server.labels.items():
            if name not in file_labels:
                changes.append(Change(DELETE, "label", name, "not in the file", "DELETE",
                                      f"/labels/{int(current['id'])}"))
    changes += label_adds
    changes += uploads
    if source.teams is not None:
        for name, team_id in server.teams.items():
            if name not in source.teams:
                changes.append(Change(DELETE, "team", name, "not in the file (its hosts go to "
                                      "no team)", "DELETE", f"/teams/{int(team_id)}"))
    used = {name: [spec.path for spec, p in validated if name in p.ca_names]
            for name in server.cas}
    for name, current in server.cas.items():
        if name in file_cas:
            continue
        if used[name]:
            notes.append(f"kept certificate authority {name}: not in the file, but "
                         f"{', '.join(used[name])} use(s) it")
            continue
        changes.append(Change(DELETE, "certificate authority", name, "not in the file",
                              "DELETE", f"/certificate_authorities/{int(current['id'])}"))
    return Plan(changes, notes)


def _ca_change(ca: CertificateAuthoritySpec, current: dict[str, Any] | None, challenge: str,
               force_challenges: bool) -> list[Change]:
    reference = f"${ca.challenge_variable}"
    if current is None:
        body = {"name": ca.name, "url": ca.url, "challenge": challenge,
                "max_concurrent_requests": ca.max_concurrent_requests,
                "max_issuance_per_second": ca.max_issuance_per_second}
        return [Change(ADD, "certificate authority", ca.name,
                       f"url {ca.url}, challenge from {reference}", "POST",
                       "/certificate_authorities", {"json": {"custom_scep_proxy": body}})]
    body: dict[str, Any] = {}
    what = []
    # The server never shows a challenge, so a changed one cannot be seen: it is sent when the
    # CA is added, when its URL changes (the API needs it then), and with --force-challenges.
    if ca.url != current["url"]:
        body.update(url=ca.url, challenge=challenge)
        what.append(f"url {current['url']} → {ca.url}, challenge from {reference}")
    elif force_challenges:
        body["challenge"] = challenge
        what.append(f"challenge from {reference} sent (profiles using it are re-sent only if it "
                    "differs from the stored one)")
    if ca.max_concurrent_requests != current["max_concurrent_requests"]:
        body["max_concurrent_requests"] = ca.max_concurrent_requests
        what.append(f"max_concurrent_requests {current['max_concurrent_requests']} → "
                    f"{ca.max_concurrent_requests}")
    rate = current["max_issuance_per_second"]
    if ca.max_issuance_per_second != (float(rate) if rate is not None else None):
        body["max_issuance_per_second"] = ca.max_issuance_per_second
        what.append(f"max_issuance_per_second {rate} → {ca.max_issuance_per_second}")
    if not body:
        return []
    return [Change(EDIT, "certificate authority", ca.name, "; ".join(what), "PATCH",
                   f"/certificate_authorities/{int(current['id'])}",
                   {"json": {"custom_scep_proxy": body}})]


def read_teams(api) -> dict[str, int]:
    return {t["name"]: t["id"] for t in _all(api, "/teams", "teams")}


def _counts(changes: list[Change], done: bool = False) -> str:
    n = {a: sum(1 for c in changes if c.action == a) for a in (ADD, EDIT, DELETE)}
    if done:
        return f"{n[ADD]} added, {n[EDIT]} changed, {n[DELETE]} deleted"
    return f"{n[ADD]} to add, {n[EDIT]} to change, {n[DELETE]} to delete"


def apply(api, path: Path, *, dry_run: bool = False, force_challenges: bool = False,
          environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Load and check `path`, plan, and (unless `dry_run`) make the changes in order. Returns
    the data for --json and the text to print."""
    source = load(path, environ)
    the_plan = plan(source, read_server(api), api, force_challenges)
    data: dict[str, Any] = {"file": str(path), "dry_run": dry_run,
                            "changes": [c.summary() for c in the_plan.changes],
                            "notes": the_plan.notes}
    lines = list(the_plan.notes)
    if not the_plan.changes:
        data["applied"] = 0
        return data, "\n".join([*lines, f"no changes: the server matches {path}"])
    if dry_run:
        data["applied"] = 0
        lines += [c.line() for c in the_plan.changes]
        lines.append(f"plan: {_counts(the_plan.changes)} (dry run: nothing was changed)")
        return data, "\n".join(lines)
    team_ids = dict(read_teams(api)) if any(c.team for c in the_plan.changes) else {}
    for done, change in enumerate(the_plan.changes):
        request = change.request
        if change.method == "POST" and change.kind == "profile" and change.team:
            # A team added by this apply has its id only now.
            request = {**request, "data": {**request.get("data", {}),
                                           "team_id": str(team_ids[change.team])}}
        try:
            answer = api.call(change.method, change.path, **request)
            if change.kind == "team" and change.action == ADD:
                team_ids[change.subject] = answer["team"]["id"]
        except CliError as exc:
            raise CliError(f"stopped at '{change.line()}': {exc} ({done} of "
                           f"{len(the_plan.changes)} changes applied before it; fix and apply "
                           "again)") from None
        lines.append(change.line(done=True))
    data["applied"] = len(the_plan.changes)
    lines.append(f"applied: {_counts(the_plan.changes, done=True)}")
    return data, "\n".join(lines)


# --- export -----------------------------------------------------------------------------------

def challenge_variable(name: str, taken: set[str]) -> str:
    """The environment variable an exported CA's challenge is read from."""
    stem, n = name.upper(), 1
    variable = f"MDMSCEP_CA_{stem}_CHALLENGE"
    while variable in taken:  # names differing only in case ("ca" and "CA")
        n += 1
        variable = f"MDMSCEP_CA_{stem}_{n}_CHALLENGE"
    taken.add(variable)
    return variable


def profile_file_name(identifier: str, taken: set[str]) -> str:
    """A plain file name for a profile: the PayloadIdentifier (the uploader's text) with every
    character but letters, digits, `.`, `_` and `-` as `_`, no leading dot, unique whatever the
    file system's case rules."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).lstrip(".")[:150] or "profile"
    name, n = f"{stem}.mobileconfig", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}-{n}.mobileconfig"
    taken.add(name.lower())
    return name


def _write(path: Path, data: bytes) -> None:
    # Through a new file renamed over the old: a symlink in its place is replaced, not followed.
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    with partial.open("xb") as f:
        f.write(data)
    os.replace(partial, path)


def export(api, directory: Path) -> tuple[dict[str, Any], str]:
    """Write today's state as DIRECTORY/default.yml and DIRECTORY/profiles/*.mobileconfig."""
    server = read_server(api)
    taken_variables: set[str] = set()
    cas = []
    for name in sorted(server.cas):
        ca = server.cas[name]
        cas.append({"name": name, "url": ca["url"],
                    "challenge": f"${challenge_variable(name, taken_variables)}",
                    "max_concurrent_requests": ca["max_concurrent_requests"],
                    "max_issuance_per_second": ca["max_issuance_per_second"]})
    (directory / PROFILES_DIR).mkdir(parents=True, exist_ok=True)
    taken_files: set[str] = set()
    settings = []
    # Profiles of no team first, then by team name; within each by PayloadIdentifier.
    for team, identifier in sorted(server.profiles, key=lambda k: (k[0] is not None, k)):
        current = server.profiles[(team, identifier)]
        raw = api.download(f"/configuration_profiles/{_segment(current['profile_uuid'])}",
                           params={"alt": "media"})
        name = profile_file_name(identifier, taken_files)
        _write(directory / PROFILES_DIR / name, raw)
        setting: dict[str, Any] = {"path": f"{PROFILES_DIR}/{name}"}
        if team is not None:
            setting["team"] = team
        for key in LABEL_KEYS:
            if current.get(key):
                setting[key] = sorted(current[key])
        settings.append(setting)
    labels = []
    for name in sorted(server.labels):
        label = server.labels[name]
        if label.get("criteria") is None:
            labels.append({"name": name, "label_membership_type": "manual",
                           "hosts": sorted(label.get("hosts", []))})
        else:
            labels.append({"name": name, "label_membership_type": "dynamic",
                           "criteria": label["criteria"]})
    document = {"org_settings": {"integrations": {"custom_scep_proxy": cas}},
                "teams": [{"name": name} for name in sorted(server.teams)],
                "labels": labels,
                "controls": {"macos_settings": {"custom_settings": settings}}}
    variables = [ca["challenge"][1:] for ca in cas]
    header = ("# mdmscep GitOps file (the shape of Fleet's default.yml), written by "
              "`mdmscep gitops export`.\n# Apply with `mdmscep gitops apply default.yml`. "
              "Challenges are never exported (the server\n# never shows them): set "
              + (", ".join(variables) if variables else "nothing") + " first.\n")
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    out = directory / DEFAULT_FILE
    _write(out, (header + text).encode())
    data = {"file": str(out), "certificate_authorities": len(cas), "profiles": len(settings),
            "teams": len(server.teams), "labels": len(labels), "challenge_variables": variables}
    lines = [f"wrote {out}: {len(cas)} certificate authorities, {len(server.teams)} teams, "
             f"{len(labels)} labels, {len(settings)} profiles (in {directory / PROFILES_DIR})"]
    if variables:
        lines.append("challenges are not exported (the server never shows them); set these "
                     "before applying: " + ", ".join(variables))
    return data, "\n".join(lines)

