"""``keyrelay keys add|import|list|remove|generate-secret|rotate-secret``: upstream keys at runtime, on the
configured database directly (like ``keyrelay clients``); a running gateway's workers pick the change up
at their next request (the store's change token moves). The secret is read from stdin, never from argv.

Exit codes: 0 done; 2 refused input or setup (bad key, unknown provider, no secret key); 1 otherwise.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from proxy.cli import _config_path, _fail, _Parser
from proxy.config import Config, ConfigError, load_config


def cmd_keys(args: argparse.Namespace) -> int:
    from proxy.app import key_settings, key_specs, open_config_store
    from proxy.keys import KeyPool, key_format
    from proxy.keys.runtime import RuntimeKeyError, RuntimeKeys, vault_for
    from proxy.keys.vault import generate_key
    from proxy.store import db
    from proxy.store.base import StoreUnavailable

    if args.action == "generate-secret":
        print(generate_key())
        sys.stderr.write("keyrelay: a new secret key; set it as KEYRELAY_SECRET_KEY (or server.secret_key)\n")
        return 0
    try:
        config = load_config(_config_path(args.config))
        pool = KeyPool(open_config_store(config), key_settings(config), start_flusher=False, owns_store=True,
                       vault=vault_for(config))
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except (db.DatabaseError, StoreUnavailable) as exc:
        return _fail(str(exc), 1)
    try:
        pool.sync(key_specs(config))
        keys = RuntimeKeys.for_config(pool, config)
        if args.action == "add":
            secret = _read_secret()
            added = keys.add(args.provider, secret, "cli", label=args.label, weight=args.weight,
                             project=args.project)
            print(added["id"])
            sys.stderr.write(f"keyrelay: key {added['id']} ({added['hint'] or 'no hint'}) added to provider "
                             f"{added['provider']}\n")
        elif args.action == "import":
            try:
                text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                return _fail(f"keys import {args.file}: unreadable: {getattr(exc, 'strerror', None) or exc}")
            out = keys.import_keys(args.provider, text, "cli")
            for bad in out["invalid_lines"]:
                sys.stderr.write(f"keyrelay: {args.file} line {bad['line']}: {bad['reason']}\n")
            print(f"added {out['added']}, duplicates {out['duplicates']}, invalid {out['invalid']}")
        elif args.action == "list":
            hints = {kid: key_format.hint(s) for kid, s in _config_secrets(config).items()}
            for k in pool.describe():
                print("\t".join(str(v) for v in (
                    k["id"], k["provider"], k["source"], _state(k), k["label"] or "",
                    hints.get(k["id"]) or k.get("hint") or "", f"{k['weight']:g}")))
        elif args.action == "remove":
            try:
                keys.remove(args.id, "cli")
            except KeyError:
                return _fail(f"no key with id {args.id!r} (keyrelay keys list shows them)", 1)
            sys.stderr.write(f"keyrelay: key {args.id} removed\n")
        elif args.action == "rotate-secret":
            out = keys.rotate_secrets("cli")
            print(f"re-encrypted {out['rotated']} runtime key(s) under the current secret key")
            if out["undecryptable"]:
                return _fail(f"{len(out['undecryptable'])} runtime key(s) no configured secret key decrypts: "
                             f"{', '.join(out['undecryptable'])}", 1)
        return 0
    except RuntimeKeyError as exc:
        return _fail(exc.message, 2 if exc.status == 400 or exc.code == "secret_key_not_set" else 1)
    except ValueError as exc:  # a key configured twice, a secret that is not one line
        return _fail(str(exc))
    except StoreUnavailable as exc:
        return _fail(f"nothing changed: {exc}", 1)
    finally:
        pool.close()


def _read_secret() -> str:
    """The upstream key from stdin: prompted without echo on a terminal, else its first line."""
    if sys.stdin.isatty():
        return getpass.getpass("upstream API key (not echoed): ")
    text = sys.stdin.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        raise ValueError("keys add reads one key from stdin; use keyrelay keys import for several")
    return lines[0] if lines else ""


def _state(k: dict) -> str:
    if k["usable"]:
        return "usable"
    if not k["enabled"]:
        return "disabled"
    return "invalid" if k["status"] == "invalid" else "not usable now"


def _config_secrets(config: Config) -> dict[str, str]:
    from proxy.keys import key_id

    return {key_id(p.name, k.key): k.key for p in config.providers for k in p.keys if k.key}


def add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="add, import, list or remove upstream keys at runtime")
    ksub = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = ksub.add_parser("add", help="add one key, read from stdin (never from the command line)")
    add.add_argument("--provider", required=True)
    add.add_argument("--label")
    add.add_argument("--weight", type=float, default=1.0)
    add.add_argument("--project", help="the upstream project the key belongs to (shares its quota)")
    imp = ksub.add_parser("import", help="add the keys of FILE (newline- or comma-separated; - = stdin)")
    imp.add_argument("--provider", required=True)
    imp.add_argument("file", metavar="FILE")
    ksub.add_parser("list", help="one line per key: id, provider, source, state, label, hint, weight")
    rm = ksub.add_parser("remove", help="remove a runtime key (config keys: edit the config)")
    rm.add_argument("id", metavar="ID")
    ksub.add_parser("generate-secret", help="print a new secret key (Fernet) for KEYRELAY_SECRET_KEY")
    ksub.add_parser("rotate-secret", help="re-encrypt runtime keys under the current secret key")
    for p in ksub.choices.values():
        p.add_argument("--config")
    keys.set_defaults(func=cmd_keys)
