"""Roles of admin API tokens: what each may call.

observer: every read (GET). maintainer: an observer's reads, plus profiles (upload, replace,
delete, resend, retry) and labels (create, edit, delete). admin: everything, certificate
authorities, API tokens, teams (create, delete), host transfer and host deletion included. Each
role holds the one below it. Each route states the role it needs where it is declared (api.py
`routes`), and that role is checked before its view runs.
"""

from __future__ import annotations

OBSERVER = "observer"
MAINTAINER = "maintainer"
ADMIN = "admin"
# From least to most: a role may do what every role before it may.
ROLES = (OBSERVER, MAINTAINER, ADMIN)
# The role of a token made by POST /api_tokens without one.
DEFAULT_ROLE = OBSERVER


def allows(role: str, needed: str) -> bool:
    """Whether a token of `role` may make a call that needs `needed`. An unknown role may do
    nothing (a role the code no longer knows is never taken as one it does)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)
