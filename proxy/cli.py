"""The ``keyrelay`` command: serve, check-config, migrate, snapshot, clients, keys (``cli_keys``), catalog,
db copy (``cli_db``), version.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. Messages go to stderr, one line each.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from proxy import __version__
from proxy.config import REPO_DIR, ConfigError, load_config

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.keys import KeyAdmin
    from proxy.store.base import KeyStore

GUNICORN_CONF = REPO_DIR / "config" / "gunicorn.conf.py"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"keyrelay: {message} (see keyrelay --help)\n")
        raise SystemExit(2)


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"keyrelay: {' '.join(str(message).split())}\n")
    return code


def _config_path(arg: str | None) -> str | None:
    return arg or os.environ.get("KEYRELAY_CONFIG") or None


def cmd_serve(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    if args.bind:
        host, sep, port = args.bind.rpartition(":")
        if not sep or not host or not port.isdigit():
            return _fail(f"--bind: expected HOST:PORT, got {args.bind!r}")
    bind = args.bind or f"{config.server.host}:{config.server.port}"
    taken = _address_in_use(bind)
    if taken:
        return _fail(taken, 1)
    env = dict(os.environ)
    if path:
        env["KEYRELAY_CONFIG"] = str(Path(path).resolve())
    env["KEYRELAY_BIND"] = bind
    env["KEYRELAY_WORKERS"] = str(args.workers or config.server.workers)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "proxy:create_app_from_env()"]
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # gunicorn's master becomes this process: signals reach it
    return 1  # not reached


def _address_in_use(bind: str) -> str | None:
    """One clear line when another process listens on ``bind`` (gunicorn would retry five times)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return None  # gunicorn says what is wrong with the address
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is not "taken"
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"cannot listen on {bind}: the address is already in use (another keyrelay running?)"
    return None


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(_config_path(args.path or args.config))
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    print(f"config ok: {len(config.providers)} provider(s), {len(config.models)} model(s)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from proxy.store import backend, db

    try:
        config = load_config(_config_path(args.config))
        applied, version = backend.migrate(config.server.database)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except db.DatabaseError as exc:
        return _fail(str(exc), 1)
    print(f"database {backend.display(config.server.database)}: schema version {version}"
          f" ({len(applied)} migration(s) applied)")
    return 0


def _key_admin(args: argparse.Namespace) -> KeyAdmin:
    """Key admin over the configured database (migrated), its pool synced with the config's keys."""
    from proxy.app import key_settings, key_specs, open_config_store
    from proxy.keys import KeyAdmin, KeyPool

    config = load_config(_config_path(args.config))
    pool = KeyPool(open_config_store(config), key_settings(config), start_flusher=False, owns_store=True)
    try:
        pool.sync(key_specs(config))
    except BaseException:
        pool.close()
        raise
    return KeyAdmin(pool)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from proxy.keys.snapshot import SnapshotError
    from proxy.store import db
    from proxy.store.base import StoreUnavailable

    try:
        admin = _key_admin(args)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except (db.DatabaseError, StoreUnavailable, ValueError) as exc:  # ValueError: a key configured twice
        return _fail(str(exc), 1)
    try:
        if args.action == "export":
            doc = admin.export_snapshot()
            text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
            if args.file and args.file != "-":
                tmp = Path(args.file + ".tmp")
                try:
                    tmp.write_text(text)
                    tmp.replace(args.file)
                except OSError as exc:
                    return _fail(f"snapshot {args.file}: cannot write: {exc.strerror or exc}", 1)
            else:
                sys.stdout.write(text)
            where = args.file if args.file and args.file != "-" else "stdout"
            sys.stderr.write(f"snapshot exported: {len(doc.get('keys', []))} key(s) to {where}\n")
            return 0
        try:
            doc = json.loads(Path(args.file).read_text() if args.file != "-" else sys.stdin.read())
        except (OSError, ValueError) as exc:
            return _fail(f"snapshot {args.file}: unreadable: {exc}")
        try:
            admin.import_snapshot(doc, actor="cli")
        except SnapshotError as exc:
            return _fail(f"snapshot refused, nothing changed: {exc}")
        except StoreUnavailable as exc:
            return _fail(f"snapshot not imported, nothing changed: {exc}", 1)
        print(f"snapshot imported: {len(doc.get('keys', []))} key(s) from "
              f"{args.file if args.file != '-' else 'stdin'}")
        return 0
    finally:
        admin.pool.close()


def _print_client(view: dict) -> None:
    for name, value in view.items():
        if isinstance(value, list | dict):
            value = json.dumps(value, sort_keys=True)
        print(f"{name}: {'' if value is None else value}")


def _open_store(args: argparse.Namespace) -> tuple[Config, KeyStore] | int:
    """The configured database, migrated, with its config; or the exit code after saying why not."""
    from proxy.app import open_config_store
    from proxy.store import db
    from proxy.store.base import StoreUnavailable

    try:
        config = load_config(_config_path(args.config))
        return config, open_config_store(config)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except (db.DatabaseError, StoreUnavailable) as exc:
        return _fail(str(exc), 1)


def cmd_clients(args: argparse.Namespace) -> int:
    """Client keys over the configured database (like ``keyrelay snapshot``); a key is printed once."""
    import time

    from proxy.clients.registry import ClientRegistry, client_view
    from proxy.errors import GatewayError
    from proxy.store.base import StoreUnavailable

    opened = _open_store(args)
    if isinstance(opened, int):
        return opened
    config, store = opened
    try:
        reg = ClientRegistry(store, time.time)
        reg.sync_config(config.clients)
        if args.action == "create":
            body: dict = {"name": args.name}
            for opt in ("team", "rpm", "tpm", "max_concurrent", "budget_usd", "budget_period",
                        "token_quota", "quota_period"):
                if getattr(args, opt) is not None:
                    body[opt] = getattr(args, opt)
            if args.models:
                body["models"] = [m for part in args.models for m in part.split(",") if m]
            if args.expires:
                body["expires_at"] = args.expires
            client, key = reg.create(body, "cli")
            print(key)
            sys.stderr.write(f"keyrelay: client {client.name} created ({client.id}); the key above is shown "
                             "only now: keep it\n")
        elif args.action == "list":
            for c in reg.list():
                state = "revoked" if c.revoked_at else ("enabled" if c.enabled else "disabled")
                models = ",".join(c.models) or "*"
                print(f"{c.id}\t{c.name}\t{c.source}\t{state}\t{c.key_hint or ''}\t{models}")
        elif args.action == "show":
            _print_client(client_view(reg.get(args.id)))
        elif args.action == "revoke":
            client = reg.revoke(args.id, "cli")
            sys.stderr.write(f"keyrelay: client {client.name} ({client.id}) revoked\n")
        elif args.action == "rotate":
            client, key = reg.rotate(args.id, args.grace_s, "cli")
            print(key)
            sys.stderr.write(f"keyrelay: client {client.name} ({client.id}) rotated; the old key works "
                             f"{args.grace_s:g} s more; the key above is shown only now\n")
        return 0
    except GatewayError as exc:
        return _fail(exc.message, 2 if exc.status == 400 else 1)
    except StoreUnavailable as exc:
        return _fail(f"nothing changed: {exc}", 1)
    finally:
        store.close()


def cmd_catalog(args: argparse.Namespace) -> int:
    """``catalog import FILE`` (either format, air-gapped installs) and ``catalog free [--provider]``."""
    import time

    from proxy.catalog import refresh, view
    from proxy.catalog.parse import CatalogFormatError
    from proxy.catalog.service import Catalog
    from proxy.store.base import StoreUnavailable

    opened = _open_store(args)
    if isinstance(opened, int):
        return opened
    config, store = opened
    try:
        if args.action == "import":
            try:
                source, n = refresh.import_document(store, refresh.read_file(args.file),
                                                    f"file:{Path(args.file).resolve()}", time.time())
            except (CatalogFormatError, ValueError) as exc:
                return _fail(f"catalog import refused, nothing changed: {exc}")
            print(f"catalog imported: {n} {source} entries from {args.file}")
            return 0
        catalog_provider = args.provider
        configured = config.provider(args.provider) if args.provider else None
        if configured is not None:  # a configured provider name: its catalog provider id
            catalog_provider = view.catalog_provider(configured)
        entries = Catalog(config, store).reload().search(catalog_provider, free=True, limit=100_000)
        entries = [e for e in entries if view.is_free(e)]
        if not entries:
            sys.stderr.write("keyrelay: no free model in the catalog"
                             f"{f' for {args.provider}' if args.provider else ''}\n")
            return 0
        print("provider\tmodel\tcontext\tmax_output\tinput\tsource")
        for e in sorted(entries, key=lambda e: (e.provider, -(e.context or 0), e.model)):
            print(f"{e.provider}\t{e.model}\t{e.context or '-'}\t{e.max_output or '-'}\t"
                  f"{','.join(e.input_modalities) or '-'}\t{e.source}")
        return 0
    except StoreUnavailable as exc:
        return _fail(f"nothing changed: {exc}", 1)
    finally:
        store.close()


def _add_catalog(sub: argparse._SubParsersAction) -> None:
    catalog = sub.add_parser("catalog", help="import a model catalog file, list free models")
    csub = catalog.add_subparsers(dest="action", required=True, parser_class=_Parser)
    imp = csub.add_parser("import", help="store a models.dev api.json or OpenRouter model list (a file)")
    imp.add_argument("file")
    free = csub.add_parser("free", help="the free models the catalog knows (prices exactly 0)")
    free.add_argument("--provider", help="a configured provider name or a catalog provider id")
    for p in csub.choices.values():
        p.add_argument("--config")
    catalog.set_defaults(func=cmd_catalog)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_clients(sub: argparse._SubParsersAction) -> None:
    from proxy.clients.model import PERIODS

    clients = sub.add_parser("clients", help="create, list, show, revoke or rotate client keys")
    csub = clients.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = csub.add_parser("create", help="create a client and print its key (once)")
    create.add_argument("name")
    create.add_argument("--models", nargs="+", help="model names or globs it may use (default: all)")
    create.add_argument("--team")
    create.add_argument("--rpm", type=_positive)
    create.add_argument("--tpm", type=_positive)
    create.add_argument("--max-concurrent", dest="max_concurrent", type=_positive)
    create.add_argument("--budget-usd", dest="budget_usd", type=float)
    create.add_argument("--budget-period", dest="budget_period", choices=PERIODS)
    create.add_argument("--token-quota", dest="token_quota", type=_positive)
    create.add_argument("--quota-period", dest="quota_period", choices=PERIODS)
    create.add_argument("--expires", help="ISO-8601 date or date-time (UTC unless it says otherwise)")
    csub.add_parser("list", help="one line per client: id, name, source, state, key hint, models")
    for action, text in (("show", "a client's fields"), ("revoke", "revoke a client's keys for good")):
        one = csub.add_parser(action, help=text)
        one.add_argument("id")
    rotate = csub.add_parser("rotate", help="a new key (printed once); the old one works --grace-s more")
    rotate.add_argument("id")
    rotate.add_argument("--grace-s", dest="grace_s", type=float, default=0.0)
    for p in csub.choices.values():
        p.add_argument("--config")
    clients.set_defaults(func=cmd_clients)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="keyrelay", description="Self-hosted OpenAI-compatible LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the gateway under gunicorn with gevent workers")
    serve.add_argument("--config", help="config file (default: $KEYRELAY_CONFIG or config/keyrelay.yaml)")
    serve.add_argument("--bind", help="HOST:PORT to listen on (default: server.host:server.port)")
    serve.add_argument("--workers", type=int, help="number of gevent workers (default: server.workers)")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("path", nargs="?", help="default: --config, $KEYRELAY_CONFIG or config/keyrelay.yaml")
    check.add_argument("--config", help="the same as PATH")
    check.set_defaults(func=cmd_check_config)
    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--config")
    migrate.set_defaults(func=cmd_migrate)
    snap = sub.add_parser("snapshot", help="export or import key state as JSON")
    ssub = snap.add_subparsers(dest="action", required=True, parser_class=_Parser)
    export = ssub.add_parser("export", help="write the key state as JSON (default: to stdout)")
    export.add_argument("file", nargs="?", help="a file, or - for stdout")
    imp = ssub.add_parser("import", help="replace the key state with a snapshot (nothing changes if refused)")
    imp.add_argument("file", help="a file, or - for stdin")
    for p in (snap, export, imp):  # --config before or after the action and the file
        p.add_argument("--config", default=argparse.SUPPRESS if p is not snap else None)
    snap.set_defaults(func=cmd_snapshot)
    _add_clients(sub)
    _add_catalog(sub)
    from proxy import cli_keys

    cli_keys.add_keys(sub)
    from proxy import cli_db

    cli_db.add_db(sub)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda args: print(f"keyrelay {__version__}") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        return _fail("--workers: must be at least 1")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
