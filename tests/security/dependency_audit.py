"""Dependency audit: pip-audit over the pinned requirements, with a reviewed ignore list.

    .venv/bin/python -m tests.security.dependency_audit          (make audit; CI runs it in make test)

Policy (so a new advisory is seen without blocking unrelated work):
- An advisory against a pin this change adds or moves (compared with MDMSCEP_AUDIT_BASE, by
  default origin/main's merge base, else HEAD) fails: whoever changes a dependency picks a
  version without known vulnerabilities, or reviews and lists the advisory.
- An advisory against a pin nobody touched is reported (a GitHub Actions warning annotation in
  CI) and does not fail, unless MDMSCEP_AUDIT_STRICT=1 (the scheduled job that makes someone
  look).
- Listed advisories (tests/security/pip-audit-ignore.txt) are skipped until their review date;
  after it they count as new again, and entries no advisory matches any more are reported stale.
- When the advisory source cannot be reached (offline, a mirror without per-version data: every
  pin comes back "not found on PyPI"), the audit says so and passes: it cannot judge.

Exit status: 0 pass or report-only, 1 blocking finding, 0 with "unavailable" when it cannot run.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ("requirements/runtime.txt", "requirements/dev.txt")
IGNORE_FILE = Path(__file__).with_name("pip-audit-ignore.txt")
TIMEOUT_SECONDS = 180

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")
_IGNORE = re.compile(r"^(?P<id>\S+)\s+(?P<package>\S+)\s+(?P<until>\d{4}-\d{2}-\d{2})\s+#\s*(?P<why>\S.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


@dataclass(frozen=True)
class Ignored:
    vuln_id: str
    package: str
    until: datetime.date
    why: str


def parse_ignore_list(text: str) -> list[Ignored]:
    """`<advisory id> <package> <review by YYYY-MM-DD>  # why it does not apply, who reviewed`."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _IGNORE.match(line.strip())
        if not match:
            raise ValueError(f"{IGNORE_FILE.name}:{number}: expected '<id> <package> "
                             f"<YYYY-MM-DD> # reason', got {line!r}")
        entries.append(Ignored(match["id"], canonical(match["package"]),
                               datetime.date.fromisoformat(match["until"]), match["why"]))
    return entries


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]


@dataclass
class Verdict:
    status: str  # "pass", "report", "blocking", "unavailable"
    blocking: list[Finding] = field(default_factory=list)
    reported: list[Finding] = field(default_factory=list)
    ignored: list[Finding] = field(default_factory=list)
    stale: list[Ignored] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    audited: int = 0
    reason: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "blocking" else 0


def judge(report: dict, changed: set[str], ignore: list[Ignored], today: datetime.date,
          strict: bool = False) -> Verdict:
    """Classify pip-audit's JSON report (`-f json`) under the policy above."""
    dependencies = report.get("dependencies", [])
    verdict = Verdict("pass")
    findings = []
    for dep in dependencies:
        if "skip_reason" in dep:
            verdict.skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
            continue
        verdict.audited += 1
        for vuln in dep.get("vulns", []):
            findings.append(Finding(canonical(dep["name"]), dep.get("version", ""), vuln["id"],
                                    tuple(vuln.get("aliases", [])),
                                    tuple(vuln.get("fix_versions", []))))
    if dependencies and verdict.audited == 0:
        verdict.status = "unavailable"
        verdict.reason = "no pinned dependency could be looked up at the advisory source"
        return verdict
    active = {(e.vuln_id, e.package): e for e in ignore if e.until >= today}
    used = set()
    for finding in findings:
        names = {finding.vuln_id, *finding.aliases}
        entry = next((active[(n, finding.package)] for n in names if (n, finding.package) in active),
                     None)
        if entry is not None:
            used.add((entry.vuln_id, entry.package))
            verdict.ignored.append(finding)
        elif finding.package in changed or strict:
            verdict.blocking.append(finding)
        else:
            verdict.reported.append(finding)
    verdict.stale = [e for e in ignore if (e.vuln_id, e.package) not in used]
    verdict.status = "blocking" if verdict.blocking else "report" if verdict.reported else "pass"
    return verdict


# --- running it ------------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def base_ref() -> str:
    explicit = os.environ.get("MDMSCEP_AUDIT_BASE")
    if explicit:
        return explicit
    merge_base = _git("merge-base", "HEAD", "origin/main")
    return merge_base.strip() if merge_base else "HEAD"


def changed_pins(base: str) -> set[str]:
    """Packages whose pin is new or different compared with `base` (working tree included)."""
    changed = set()
    for path in REQUIREMENTS:
        now = parse_pins((ROOT / path).read_text()) if (ROOT / path).exists() else {}
        before_text = _git("show", f"{base}:{path}")
        before = parse_pins(before_text) if before_text is not None else {}
        changed |= {name for name, version in now.items() if before.get(name) != version}
    return changed


def pip_audit_command() -> list[str] | None:
    local = Path(sys.executable).parent / "pip-audit"
    executable = str(local) if local.exists() else shutil.which("pip-audit")
    if executable is None:
        return None
    args = [executable, "--no-deps", "--disable-pip", "--progress-spinner", "off", "-f", "json"]
    for path in REQUIREMENTS:
        args += ["-r", str(ROOT / path)]
    return args


def run_pip_audit() -> tuple[dict | None, str]:
    command = pip_audit_command()
    if command is None:
        return None, "pip-audit is not installed (requirements/dev.txt pins it)"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"pip-audit did not finish within {TIMEOUT_SECONDS} s (advisory source slow?)"
    try:
        return json.loads(done.stdout), ""
    except ValueError:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return None, f"pip-audit could not reach its advisory source: {tail}"


def audit(today: datetime.date | None = None) -> Verdict:
    report, problem = run_pip_audit()
    if report is None:
        return Verdict("unavailable", reason=problem)
    ignore = parse_ignore_list(IGNORE_FILE.read_text()) if IGNORE_FILE.exists() else []
    strict = os.environ.get("MDMSCEP_AUDIT_STRICT", "") not in ("", "0")
    return judge(report, changed_pins(base_ref()), ignore, today or datetime.date.today(), strict)


def describe(verdict: Verdict) -> str:
    def line(f: Finding) -> str:
        fix = f"; fixed in {', '.join(f.fix_versions)}" if f.fix_versions else "; no fix yet"
        aliases = f" ({', '.join(f.aliases)})" if f.aliases else ""
        return f"  {f.package}=={f.version}: {f.vuln_id}{aliases}{fix}"

    out = [f"dependency audit: {verdict.status} ({verdict.audited} pins audited, "
           f"{len(verdict.skipped)} not found at the advisory source)"]
    if verdict.reason:
        out.append(f"  {verdict.reason}")
    if verdict.blocking:
        out.append("advisories against pins this change adds or moves (blocking):")
        out += [line(f) for f in verdict.blocking]
    if verdict.reported:
        out.append("advisories against pins this change does not touch (reported, not blocking):")
        out += [line(f) for f in verdict.reported]
    if verdict.ignored:
        out.append("reviewed and listed in pip-audit-ignore.txt:")
        out += [line(f) for f in verdict.ignored]
    if verdict.stale:
        out.append("ignore entries no advisory matches any more (remove them):")
        out += [f"  {e.vuln_id} {e.package}" for e in verdict.stale]
    return "\n".join(out)


def main() -> int:
    verdict = audit()
    print(describe(verdict))
    if os.environ.get("GITHUB_ACTIONS"):
        for finding in verdict.reported:
            print(f"::warning title=dependency advisory::{finding.package}=={finding.version} "
                  f"{finding.vuln_id}")
    return verdict.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
