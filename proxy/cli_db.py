"""``keyrelay db copy --from SQLITE_PATH --to POSTGRES_URL [--force]``: move an installation from SQLite
to PostgreSQL (``proxy/store/copy.py`` says how); prints every table's row count on both sides.

``--to`` defaults to ``$KEYRELAY_DATABASE``; a URL without a password takes ``$PGPASSWORD`` (either
keeps the password out of the process list). The password is never printed.

Exit codes: 0 copied and verified; 2 bad input (missing or non-keyrelay file, bad URL); 1 refused (the
target holds data, a schema newer than this keyrelay), failed (server unreachable) or counts differ.
In every case but 0 nothing was written to the target.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from proxy.cli import _fail, _Parser


def cmd_db(args: argparse.Namespace) -> int:
    from proxy.store import backend
    from proxy.store.copy import CopyError, copy
    from proxy.store.pg_conn import is_postgres_url, parse_url

    url = args.to or os.environ.get("KEYRELAY_DATABASE", "")
    if not url:
        return _fail("db copy: --to POSTGRES_URL is required (or set KEYRELAY_DATABASE)")
    if not is_postgres_url(url):
        return _fail("db copy: --to: expected postgresql://user:password@host:port/database")
    try:
        target = parse_url(url)
    except ValueError as exc:
        return _fail(f"db copy: --to: {exc}")
    if target.password is None and os.environ.get("PGPASSWORD"):
        target = dataclasses.replace(target, password=os.environ["PGPASSWORD"])
    source = backend.sqlite_path(args.source)
    try:
        report = copy(source, target, force=args.force)
    except CopyError as exc:
        return _fail(f"db copy: {exc}", exc.code)
    width = max(len(t.name) for t in report.tables) if report.tables else 5
    print(f"{'table':<{width}}  {'sqlite':>9}  {'postgresql':>10}  check")
    for t in sorted(report.tables, key=lambda t: t.name):
        print(f"{t.name:<{width}}  {t.source:>9}  {'-' if t.target is None else t.target:>10}  "
              f"{'ok' if t.ok else 'MISMATCH'}")
    rows = sum(t.source for t in report.tables)
    if not report.ok:
        bad = [t.name for t in report.tables if not t.ok]
        return _fail(f"db copy: counts differ in {', '.join(bad)}: rolled back, nothing written", 1)
    print(f"copied {rows} row(s) in {len(report.tables)} table(s) from {report.source} to {report.target} "
          f"(schema version {report.schema_version}); identity sequences advanced: "
          + (", ".join(f"{t} {n}" for t, n in sorted(report.sequences.items())) or "none"))
    if report.count("runtime_keys"):
        sys.stderr.write(f"keyrelay: {report.count('runtime_keys')} runtime key(s) copied encrypted as they "
                         "were: the gateway on PostgreSQL needs the same server.secret_key "
                         "(KEYRELAY_SECRET_KEY)\n")
    return 0


def add_db(sub: argparse._SubParsersAction) -> None:
    dbp = sub.add_parser("db", help="database operations: copy an installation from SQLite to PostgreSQL")
    dsub = dbp.add_subparsers(dest="action", required=True, parser_class=_Parser)
    cp = dsub.add_parser("copy", help="copy every table of a SQLite database into an empty PostgreSQL one "
                                      "(one transaction, verified by counts)")
    cp.add_argument("--from", dest="source", required=True, metavar="SQLITE_PATH",
                    help="the SQLite database file (stop the gateway using it first)")
    cp.add_argument("--to", metavar="POSTGRES_URL",
                    help="postgresql://user:password@host:port/database (default: $KEYRELAY_DATABASE)")
    cp.add_argument("--force", action="store_true",
                    help="replace whatever the target holds (deleted in the same transaction)")
    dbp.set_defaults(func=cmd_db)
