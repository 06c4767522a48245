"""admin-config's SQL names only its own tables: hosts are mdm-endpoint's, deliveries and host
certificates the profile-processor's, CA request records and slots scep-proxy's, and
admin-config asks those owners over gRPC (docs/architecture.md, "Who reads or writes which
table today"). A static scan of every string in the admin_config package (docstrings aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "admin_config" / "admin_config"
OTHERS_TABLES = ("hosts", "host_profiles", "host_certificates", "ca_requests", "pg_locks")
_NAMES = "|".join(OTHERS_TABLES)
# A table named where SQL names tables, schema-qualified or quoted or not.
SQL_NAMING = re.compile(
    rf"\b(?:from|join|into|update|table|truncate|using)\s+(?:\"?\w+\"?\.)?\"?(?:{_NAMES})\b",
    re.IGNORECASE)
# These names mean nothing but the table in a string.
TABLE_ONLY_NAMES = re.compile(r"\b(?:host_profiles|host_certificates|ca_requests|pg_locks)\b")


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def foreign_sql(source: str) -> list[str]:
    """The strings of `source` (f-strings' literal parts too) that name another service's
    table as SQL does."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SQL_NAMING.search(node.value) or TABLE_ONLY_NAMES.search(node.value):
                found.append(node.value)
    return found


def test_the_scan_finds_sql_on_other_services_tables():
    # What admin-config ran before it asked the owners, one query per table.
    before = '''
rows = conn.execute("SELECT h.uuid FROM hosts h WHERE h.uuid = %s", (u,))
counts = conn.execute(f"SELECT status, count(*) AS n FROM host_profiles WHERE {where}")
certs = conn.execute("SELECT c.serial FROM profiles p LEFT JOIN host_certificates c ON true")
stats = conn.execute("SELECT outcome FROM ca_requests WHERE ca_name = %s", (name,))
held = conn.execute("SELECT count(*) FROM pg_locks WHERE granted")
qualified = conn.execute('SELECT 1 FROM "mdm_endpoint"."hosts"')
'''
    assert len(foreign_sql(before)) == 6
    # Words in messages and docstrings are not SQL.
    assert foreign_sql('"""Reads hosts from the ca_requests owner."""\nm = "3 hosts from the list"\n') == []


def test_admin_config_names_no_other_services_table_in_sql():
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) > 10  # the package is where this test thinks it is
    offending = {path.name: hits for path in sources
                 if (hits := foreign_sql(path.read_text(encoding="utf-8")))}
    assert offending == {}
