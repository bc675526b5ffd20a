"""SQLite connection lifecycle and the migrations runner (SQLite-specific; used by ``sqlite.py``).

One database file is the single source of truth shared by every gunicorn worker. Connections use WAL
mode; write transactions must stay tiny. SQLite's busy handler waits inside C, which would stall
every greenlet of a gevent worker, so ``SQLiteStore`` sets ``busy_timeout=0`` after migrating and
waits for locks itself, cooperatively.
"""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")


class DatabaseError(Exception):
    """The database cannot be used (unreadable, newer than the code, failed migration)."""


def connect(path: str | Path, *, busy_timeout_ms: int = 2000, create: bool = True) -> sqlite3.Connection:
    """Open the database in WAL mode; autocommit (isolation_level=None) so transactions are explicit.
    With ``create=False`` a missing file is an error instead of a new empty database (for probes)."""
    path = Path(path)
    try:
        if create and str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        target = str(path) if create else f"{path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(target, timeout=busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False, uri=not create)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except (sqlite3.DatabaseError, OSError) as exc:
        raise DatabaseError(f"database unusable: cannot open {path}: {exc}") from None
    return conn


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    found = []
    for f in sorted(directory.glob("*.sql")):
        m = _NAME.match(f.name)
        if m:
            found.append((int(m.group(1)), f.name, f))
    return found


def applied_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def code_version(directory: Path = MIGRATIONS_DIR) -> int:
    migs = available_migrations(directory)
    return migs[-1][0] if migs else 0


def migrate(conn: sqlite3.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order, each inside one transaction; return the names applied.

    Refuses a database whose schema is newer than this code.
    """
    import time

    try:
        current = applied_version(conn)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"database unusable: {exc}") from None
    latest = code_version(directory)
    if current > latest:
        raise DatabaseError(
            f"database schema version {current} is newer than this keyrelay (knows up to {latest}); "
            "upgrade keyrelay or use another database file"
        )
    applied = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    done = []
    for version, name, path in available_migrations(directory):
        if version in applied:  # by number, not "above the newest": a lower one merged later still runs
            continue
        sql = path.read_text()
        try:
            conn.execute("BEGIN IMMEDIATE")
            # re-check inside the lock: another worker may have migrated meanwhile
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version=?", (version,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?,?,?)",
                (version, name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise DatabaseError(f"migration {name} failed: {exc}") from None
        done.append(name)
    return done


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (sqlite3.complete_statement knows about quotes)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def check_ready(conn: sqlite3.Connection) -> str | None:
    """None when the database is usable and fully migrated, else the reason (reads only)."""
    try:
        applied = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    except sqlite3.DatabaseError as exc:
        return f"database unusable: {exc}"
    current = max(applied, default=0)
    latest = code_version()
    missing = [v for v, _, _ in available_migrations() if v not in applied]
    if current != latest or missing:
        return f"database schema at version {current}, code expects {latest}" + (
            f" (migrations {', '.join(map(str, missing))} not applied)" if missing else "")
    return None
