"""admin-config entry points: `admin-config serve` (the API, gunicorn), `admin-config worker`
(outbox relay and background duties: worker.py), and token administration for operators."""

from __future__ import annotations

import argparse
import sys

from mdmscep_common.http import serve_http
from mdmscep_common.service_tls import service_tls_or_exit
from mdmscep_common.settings import load_or_exit

from .roles import ADMIN, ROLES
from .settings import AdminConfigSettings

SERVICE = "admin-config"


def _serve(settings, _args) -> None:
    from .app import create_production_app

    service_tls_or_exit(settings, SERVICE)  # its workers call gRPC: fail fast here
    serve_http(lambda: create_production_app(settings), settings.admin_http_port,
               settings.http_workers, settings.http_threads, SERVICE, settings.secret_values(),
               host=settings.http_bind_address)


def _worker(settings, _args) -> None:
    from .worker import run_worker

    run_worker(settings, SERVICE)


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
                    store.create(conn, args.name, token_hash(token), args.role)
                except NameTaken:
                    sys.exit(f"a token named {args.name!r} already exists")
                print(token)  # alone on stdout, for scripts
                print(f"role: {args.role}", file=sys.stderr)
            elif args.action == "revoke":
                if not store.revoke(conn, args.name):
                    sys.exit(f"no active token named {args.name!r}")
                print(f"revoked {args.name}")
            else:
                for row in store.list(conn):
                    state = "revoked" if row["revoked_at"] else "active"
                    print(f"{row['name']}\t{row['role']}\t{state}\t"
                          f"created {row['created_at']:%Y-%m-%d}\t"
                          f"last used {row['last_used_at'] or 'never'}")
    finally:
        db.close()


def _rotate_key(settings, args) -> None:
    from mdmscep_common.db import Database
    from mdmscep_common.logs import configure_logging

    from .key_rotation import UnreadableSecrets, rotate_key

    configure_logging(f"{SERVICE}-cli", settings.secret_values())
    db = Database(settings.database_url, name=f"{SERVICE}-cli").open()
    try:
        report = rotate_key(db, settings.server_private_key, settings.server_private_key_previous,
                            dry_run=args.dry_run)
    except UnreadableSecrets as exc:
        for name in exc.report.unreadable:
            print(f"opens with neither key: {name}", file=sys.stderr)
        if not settings.server_private_key_previous:
            print("(to rotate from an old key, set it in SERVER_PRIVATE_KEY_PREVIOUS and the new "
                  "one in SERVER_PRIVATE_KEY: docs/operations.md)", file=sys.stderr)
        sys.exit("nothing was changed; re-enter those challenges (mdmscep ca edit ID "
                 "--new-challenge) or fix the keys, then run rotate-key again")
    finally:
        db.close()
    verb = "would re-encrypt" if args.dry_run else "re-encrypted"
    for name in report.reencrypted:
        print(f"{verb}: {name}")
    print(f"{verb} {len(report.reencrypted)} secret(s) under SERVER_PRIVATE_KEY; "
          f"{len(report.already_current)} already used it")


def _prune(settings, _args) -> None:
    from mdmscep_common.db import Database
    from mdmscep_common.logs import configure_logging
    from mdmscep_common.retention import Pruner

    from .background_duties import retention_rules

    configure_logging(f"{SERVICE}-cli", settings.secret_values())
    db = Database(settings.database_url, name=f"{SERVICE}-cli").open()
    try:
        deleted = Pruner(db, batch_size=settings.prune_batch_size).prune_all(
            retention_rules(settings))
    finally:
        db.close()
    for table, count in deleted.items():
        print(f"{table}: {count} row(s) past retention deleted")


def main() -> None:
    parser = argparse.ArgumentParser(prog=SERVICE, description="mdmscep admin API service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the admin API (gunicorn)")
    sub.add_parser("worker", help="relay admin-config's events to RabbitMQ and run its background "
                   "duties (expiry checks, retention, credential.expiring)")
    tokens = sub.add_parser("tokens", help="manage admin API bearer tokens")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    create = tokens_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="who the token is for; shown as the actor of activities")
    # admin by default, unlike POST /api_tokens (observer): this is the bootstrap path, run where
    # the database credentials already allow everything, and how a first admin token is made
    # without ADMIN_API_TOKEN; what it made before roles existed stays what it makes.
    create.add_argument("--role", choices=ROLES, default=ADMIN,
                        help="what the token may do: observer (reads), maintainer (also "
                             "profiles), admin (everything; the default here)")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name")
    tokens_sub.add_parser("list", help="list tokens (never their values)")
    rotate = sub.add_parser("rotate-key", help="re-encrypt stored secrets under SERVER_PRIVATE_KEY "
                            "(from SERVER_PRIVATE_KEY_PREVIOUS, or from the legacy format; one "
                            "transaction)")
    rotate.add_argument("--dry-run", action="store_true", help="check every secret, change nothing")
    sub.add_parser("prune", help="delete activities past ACTIVITY_RETENTION_DAYS now (the service "
                   "also does it every PRUNE_INTERVAL)")
    args = parser.parse_args()
    # The worker never encrypts nor decrypts secrets at rest: it starts without the key.
    settings = load_or_exit(lambda: AdminConfigSettings.from_env(
        needs_server_private_key=args.command != "worker"))
    {"serve": _serve, "worker": _worker, "tokens": _tokens, "rotate-key": _rotate_key,
     "prune": _prune}[args.command](settings, args)
