"""admin-config entry point: `admin-config serve`, and token administration for operators."""

from __future__ import annotations

import argparse
import sys

from mdmscep_common.http import serve_http
from mdmscep_common.settings import load_settings_or_exit

SERVICE = "admin-config"


def _serve(settings, _args) -> None:
    from .app import create_production_app

    serve_http(lambda: create_production_app(settings), settings.admin_http_port,
               settings.http_workers, settings.http_threads, SERVICE, settings.secret_values(),
               host=settings.http_bind_address)


def _tokens(settings, args) -> None:
    from mdmscep_common.db import Database

    from .auth import new_token, token_hash
    from .store import ApiTokenStore, NameTaken

    db = Database(settings.database_url, name=f"{SERVICE}-cli").open()
    store = ApiTokenStore()
    try:
        with db.transaction() as conn:
            if args.action == "create":
                token = new_token()
                try:
                    store.create(conn, args.name, token_hash(token))
                except NameTaken:
                    sys.exit(f"a token named {args.name!r} already exists")
                print(token)
            elif args.action == "revoke":
                if not store.revoke(conn, args.name):
                    sys.exit(f"no active token named {args.name!r}")
                print(f"revoked {args.name}")
            else:
                for row in store.list(conn):
                    state = "revoked" if row["revoked_at"] else "active"
                    print(f"{row['name']}\t{state}\tcreated {row['created_at']:%Y-%m-%d}\t"
                          f"last used {row['last_used_at'] or 'never'}")
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description="mdmscep admin API service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the admin API (gunicorn)")
    tokens = sub.add_parser("tokens", help="manage admin API bearer tokens")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    create = tokens_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="who the token is for; shown as the actor of activities")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name")
    tokens_sub.add_parser("list", help="list tokens (never their values)")
    args = parser.parse_args()
    settings = load_settings_or_exit()
    {"serve": _serve, "tokens": _tokens}[args.command](settings, args)
