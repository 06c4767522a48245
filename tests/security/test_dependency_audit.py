"""The dependency audit (tests/security/dependency_audit.py): its policy on synthetic pip-audit
reports, the reviewed ignore list's format, and one live run (skipped when the advisory source
cannot be reached, as on a machine whose only network is a PyPI mirror)."""

from __future__ import annotations

import datetime

import pytest

from tests.security import dependency_audit as audit

TODAY = datetime.date(2026, 11, 27)


def report(*deps):
    return {"dependencies": list(deps), "fixes": []}


def dep(name, version="1.0", *vulns, skip=None):
    if skip:
        return {"name": name, "skip_reason": skip}
    return {"name": name, "version": version,
            "vulns": [{"id": v, "fix_versions": ["9.9"], "aliases": [f"CVE-{v}"], "description": ""}
                      for v in vulns]}


def test_an_advisory_on_an_untouched_pin_is_reported_not_blocking():
    verdict = audit.judge(report(dep("flask", "3.1.3", "PYSEC-1"), dep("kombu")), changed=set(),
                          ignore=[], today=TODAY)
    assert verdict.status == "report" and verdict.exit_code == 0
    assert [f.vuln_id for f in verdict.reported] == ["PYSEC-1"]
    assert "not blocking" in audit.describe(verdict)


def test_an_advisory_on_a_pin_this_change_moves_blocks():
    verdict = audit.judge(report(dep("Flask", "3.1.4", "PYSEC-1")), changed={"flask"}, ignore=[],
                          today=TODAY)
    assert verdict.status == "blocking" and verdict.exit_code == 1


def test_strict_mode_blocks_on_any_advisory():
    verdict = audit.judge(report(dep("flask", "3.1.3", "PYSEC-1")), changed=set(), ignore=[],
                          today=TODAY, strict=True)
    assert verdict.exit_code == 1


def test_a_listed_advisory_is_skipped_until_its_review_date():
    entry = audit.Ignored("CVE-PYSEC-1", "flask", datetime.date(2026, 12, 31), "not reachable")
    listed = audit.judge(report(dep("flask", "3.1.4", "PYSEC-1")), changed={"flask"},
                         ignore=[entry], today=TODAY)
    assert listed.status == "pass" and len(listed.ignored) == 1  # matched through its alias
    expired = audit.judge(report(dep("flask", "3.1.4", "PYSEC-1")), changed={"flask"},
                          ignore=[entry], today=datetime.date(2027, 1, 1))
    assert expired.status == "blocking"


def test_stale_ignore_entries_are_reported():
    entry = audit.Ignored("GHSA-gone", "kombu", datetime.date(2027, 1, 1), "fixed upstream")
    verdict = audit.judge(report(dep("kombu")), changed=set(), ignore=[entry], today=TODAY)
    assert verdict.stale == [entry] and "remove them" in audit.describe(verdict)


def test_an_unreachable_advisory_source_cannot_judge():
    verdict = audit.judge(report(dep("flask", skip="Dependency not found on PyPI and could not "
                                                   "be audited: flask (3.1.3)")),
                          changed={"flask"}, ignore=[], today=TODAY)
    assert verdict.status == "unavailable" and verdict.exit_code == 0


def test_pins_and_changes_are_read_like_pip_does():
    assert audit.parse_pins("Flask==3.1.3\n# c\npsycopg-binary==3.3.9 ; python_version>'3'\n"
                            "typing_extensions==4.16.0  # why\n-e ./x\n") == \
        {"flask": "3.1.3", "psycopg-binary": "3.3.9", "typing-extensions": "4.16.0"}


def test_the_ignore_list_is_well_formed():
    entries = audit.parse_ignore_list(audit.IGNORE_FILE.read_text())
    for entry in entries:
        assert entry.why.strip() and entry.until > datetime.date(2026, 1, 1)
    with pytest.raises(ValueError):
        audit.parse_ignore_list("PYSEC-1 flask  # no review date\n")


def test_the_live_audit_passes_or_says_why_it_cannot_run():
    verdict = audit.audit()
    text = audit.describe(verdict)
    if verdict.status == "unavailable":
        pytest.skip(f"dependency audit not possible here: {verdict.reason}")
    assert verdict.exit_code == 0, text
