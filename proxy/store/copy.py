"""``keyrelay db copy``: an installation's SQLite database into a PostgreSQL one, all or nothing.

1. Both sides are migrated to this code's schema (a side newer than the code is refused, as ``migrate``
   refuses it) and must then have applied the same migrations.
2. The tables are the source's (every table the migrations created, ``schema_migrations`` and SQLite's
   own aside), each of which must exist in the target with the same columns; they are copied parents
   first (foreign keys) in **one** PostgreSQL transaction that holds the store's write lock, so running
   instances on the target neither see a half-copied database nor write into it meanwhile.
3. The target must hold no data: only the rows the migrations themselves insert (singletons and
   counters such as ``client_changes``, ``catalog_state``, ``cache_totals``) may be there, and they are
   replaced by the source's. ``force=True`` deletes whatever the target holds first, in the same
   transaction.
4. The source is read in one read transaction (a consistent snapshot even while something writes it;
   writes after that snapshot are not copied, so stop the gateway first).
5. Identity columns' sequences are set past the highest id copied (and past SQLite's
   ``sqlite_sequence``, so ids an ``AUTOINCREMENT`` table once handed out are never reused).
6. Before committing, every table's row count in the target is compared with the source's; any
   difference rolls everything back.

Runtime keys are copied as they are stored: Fernet tokens, so the gateway on PostgreSQL needs the same
``server.secret_key``. Values keep their meaning across the type mapping (``INTEGER`` → ``BIGINT``,
``REAL`` → ``DOUBLE PRECISION``, ``BLOB`` → ``BYTEA``).
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import db, pg_schema
from .pg_conn import PgConnection, PgServerError, PgTarget, PgUnavailable, _reason
from .postgres import CHANNEL, WRITE_LOCK

LOCK_WAIT_MS = 10_000  # a running instance holds the write lock for milliseconds at a time
MAX_PARAMS = 30_000  # per INSERT statement (PostgreSQL's limit is 65,535)
MAX_BATCH_ROWS = 500
Columns = dict[str, dict[str, tuple[str, bool]]]  # {table: {column: (data type, is identity)}}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# rows a migration inserts itself (INSERT ... VALUES), not ones it moves from an old table (INSERT ... SELECT)
_SEEDS = re.compile(r"\bINSERT\s+INTO\s+(\w+)\s*(?:\([^)]*\))?\s*VALUES\b", re.IGNORECASE)


class CopyError(Exception):
    """Nothing was written; ``code`` is the exit code (2: bad input, 1: refused or failed)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TableCount:
    name: str
    source: int
    target: int | None = None  # None: not counted (the copy stopped before)

    @property
    def ok(self) -> bool:
        return self.target == self.source


@dataclass
class CopyReport:
    source: str
    target: str  # the URL without its password
    schema_version: int
    tables: list[TableCount] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # table -> the last id now taken
    replaced: list[str] = field(default_factory=list)  # target tables that held rows before (replaced)
    committed: bool = False

    @property
    def ok(self) -> bool:
        return self.committed and all(t.ok for t in self.tables)

    def count(self, table: str) -> int:
        return next((t.source for t in self.tables if t.name == table), 0)


def seeded_tables(directory: Path = db.MIGRATIONS_DIR) -> set[str]:
    """The tables the migrations insert rows into (a freshly migrated database has these rows)."""
    files = list(directory.glob("*.sql")) + list((directory / "postgresql").glob("*.sql"))
    return {m.group(1).lower() for f in files for m in _SEEDS.finditer(f.read_text())}


def _q(name: str) -> str:
    if not _IDENT.match(name):
        raise CopyError(f"unexpected table or column name {name!r}")
    return f'"{name}"'


# -- the source ---------------------------------------------------------------------------------------
def open_source(path: str) -> sqlite3.Connection:
    """The SQLite database at ``path`` (which must exist and be keyrelay's), migrated."""
    p = Path(path)
    if not p.exists():
        raise CopyError(f"--from {path}: no such file", 2)
    if not p.is_file():
        raise CopyError(f"--from {path}: not a file", 2)
    try:
        conn = db.connect(p, create=False)
    except db.DatabaseError as exc:
        raise CopyError(f"--from {path}: not a usable SQLite database ({_tail(exc)})", 2) from None
    try:
        known = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
                             ).fetchone()
        if not known:
            raise CopyError(f"--from {path}: not a keyrelay database (it has no schema_migrations table)", 2)
        db.migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CopyError(f"--from {path}: not a usable SQLite database ({exc})", 2) from None
    except db.DatabaseError as exc:
        conn.close()
        raise CopyError(f"--from {path}: {exc}") from None
    except CopyError:
        conn.close()
        raise
    return conn


def _tail(exc: Exception) -> str:
    return str(exc).rsplit(": ", 1)[-1]


def _source_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                        " AND name <> 'schema_migrations' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def _source_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({_q(table)})")]


def _parents(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[2] for r in conn.execute(f"PRAGMA foreign_key_list({_q(table)})")} - {table}


def _sqlite_sequences(conn: sqlite3.Connection) -> dict[str, int]:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
        return {}
    return {name: int(seq or 0) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}


def _parents_first(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    parents = {t: _parents(conn, t) & set(tables) for t in tables}
    order: list[str] = []
    while parents:
        ready = sorted(t for t, ps in parents.items() if ps <= set(order))
        if not ready:  # a cycle (none in keyrelay's schema): the remaining ones in name order
            ready = sorted(parents)
        for t in ready:
            order.append(t)
            del parents[t]
    return order


# -- the target ---------------------------------------------------------------------------------------
def open_target(target: PgTarget) -> PgConnection:
    try:
        conn = PgConnection(target, timeout_s=60.0, application_name="keyrelay-db-copy")
    except PgUnavailable as exc:
        raise CopyError(f"--to: {exc}") from None
    try:
        pg_schema.migrate(conn)
    except db.DatabaseError as exc:
        conn.close()
        raise CopyError(f"--to {target.display}: {exc}") from None
    return conn


def _target_columns(conn: PgConnection) -> Columns:
    """{table: {column: (data type, is identity)}} of the target's current schema."""
    out: Columns = {}
    rows = conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type, c.is_identity FROM information_schema.columns c"
        " JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'").fetchall()
    for table, column, kind, identity in rows:
        out.setdefault(table, {})[column] = (kind, identity == "YES")
    out.pop("schema_migrations", None)
    return out


def _count(conn: PgConnection, table: str) -> int:
    row = conn.execute(f"SELECT COUNT(*) FROM {_q(table)}").fetchone()
    return int(row[0]) if row else 0


def _convert(value: Any, kind: str, where: str) -> Any:
    """A SQLite value as the target column's type takes it (SQLite columns hold any type)."""
    if value is None:
        return None
    if kind == "bytea":
        return value.encode() if isinstance(value, str) else bytes(value)
    if kind in ("bigint", "integer", "smallint"):
        if isinstance(value, float):
            if not value.is_integer():
                raise CopyError(f"{where}: {value!r} is not a whole number")
            return int(value)
        return value
    if kind == "double precision" and isinstance(value, int):
        return float(value)
    if kind == "text" and isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise CopyError(f"{where}: binary data in a text column") from None
    return value


def _insert(pg: PgConnection, src: sqlite3.Connection, table: str, columns: list[str],
            types: dict[str, tuple[str, bool]]) -> None:
    kinds = [types[c][0] for c in columns]
    per = max(1, min(MAX_BATCH_ROWS, MAX_PARAMS // max(1, len(columns))))
    cols = ", ".join(_q(c) for c in columns)
    row_sql = "(" + ", ".join("?" for _ in columns) + ")"
    cur = src.execute(f"SELECT {cols} FROM {_q(table)}")
    while True:
        rows = cur.fetchmany(per)
        if not rows:
            return
        params: list[Any] = []
        for row in rows:
            params.extend(_convert(v, k, f"{table}.{c}") for v, k, c in zip(row, kinds, columns, strict=True))
        pg.execute(f"INSERT INTO {_q(table)} ({cols}) VALUES " + ", ".join(row_sql for _ in rows), params)


def _advance_sequences(pg: PgConnection, tables: list[str], target_cols: Columns,
                       sqlite_seq: dict[str, int]) -> dict[str, int]:
    """Each identity column's sequence past the highest id copied (and past what SQLite handed out)."""
    done: dict[str, int] = {}
    for table in tables:
        for column, (_, identity) in target_cols[table].items():
            if not identity:
                continue
            row = pg.execute(f"SELECT MAX({_q(column)}) FROM {_q(table)}").fetchone()
            last = max(int(row[0]) if row and row[0] is not None else 0, sqlite_seq.get(table, 0))
            if last > 0:
                pg.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)", (table, column, last))
                done[table] = last
    return done


def copy(source_path: str, target: PgTarget, *, force: bool = False) -> CopyReport:
    """Copy every table of the SQLite database at ``source_path`` into ``target`` (module docstring).

    Raises ``CopyError`` when nothing was written for a reason found before counting; returns the
    report otherwise: ``report.ok`` False (counts differ) means it was rolled back too."""
    src = open_source(source_path)
    try:
        pg = open_target(target)
        try:
            return _copy(src, pg, source_path, target, force)
        finally:
            pg.close()
    finally:
        src.close()


def _copy(src: sqlite3.Connection, pg: PgConnection, source_path: str, target: PgTarget,
          force: bool) -> CopyReport:
    versions_src = {int(v) for (v,) in src.execute("SELECT version FROM schema_migrations")}
    versions_pg = {int(v) for (v,) in pg.execute("SELECT version FROM schema_migrations")}
    if versions_src != versions_pg:
        raise CopyError(f"schemas differ after migrating: source has migrations {sorted(versions_src)}, "
                        f"target {sorted(versions_pg)}")
    report = CopyReport(source_path, target.display, max(versions_src, default=0))
    target_cols = _target_columns(pg)
    src.execute("BEGIN")  # one read snapshot for the counts and the rows
    try:
        tables = _parents_first(src, _source_tables(src))
        columns: dict[str, list[str]] = {}
        for table in tables:
            if table not in target_cols:
                raise CopyError(f"table {table} is missing in the target: not the same schema")
            columns[table] = _source_columns(src, table)
            missing = [c for c in columns[table] if c not in target_cols[table]]
            if missing:
                raise CopyError(f"table {table}: column(s) {', '.join(missing)} missing in the target")
        counts = {t: int(src.execute(f"SELECT COUNT(*) FROM {_q(t)}").fetchone()[0]) for t in tables}
        sqlite_seq = _sqlite_sequences(src)
        try:
            _write(pg, src, report, tables, columns, counts, target_cols, sqlite_seq, force)
        except PgUnavailable as exc:
            _rollback(pg)
            raise CopyError(f"copy failed, nothing written: {exc}") from None
        except PgServerError as exc:
            _rollback(pg)
            raise CopyError(f"copy failed, nothing written: {_reason(exc)}") from None
        except BaseException:
            _rollback(pg)
            raise
    finally:
        src.execute("ROLLBACK")
    return report


def _write(pg: PgConnection, src: sqlite3.Connection, report: CopyReport, tables: list[str],
           columns: dict[str, list[str]], counts: dict[str, int],
           target_cols: Columns, sqlite_seq: dict[str, int],
           force: bool) -> None:
    pg.execute("BEGIN")
    pg.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
    pg.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
    seeded = seeded_tables()
    held = {t: n for t in sorted(target_cols) if (n := _count(pg, t))}
    data = {t: n for t, n in held.items() if t not in seeded}
    if data and not force:
        listed = ", ".join(f"{t} {n}" for t, n in list(data.items())[:6]) + (", ..." if len(data) > 6 else "")
        raise CopyError(f"--to {report.target} already holds data (rows: {listed}); nothing written: "
                        "copy into a new empty database, or pass --force to replace what it holds")
    report.replaced = sorted(held)
    for table in reversed(_all_parents_first(tables, target_cols)):
        if table in held:
            pg.execute(f"DELETE FROM {_q(table)}")
    for table in tables:
        _insert(pg, src, table, columns[table], target_cols[table])
    report.sequences = _advance_sequences(pg, tables, target_cols, sqlite_seq)
    report.tables = [TableCount(t, counts[t], _count(pg, t)) for t in tables]
    if not all(t.ok for t in report.tables):
        _rollback(pg)
        return
    pg.execute(f"NOTIFY {CHANNEL}")  # instances already running on the target re-read their views
    pg.execute("COMMIT")
    report.committed = True


def _all_parents_first(tables: list[str], target_cols: Columns) -> list[str]:
    """Every target table, parents first: the copied ones in their order, the target's own after."""
    return tables + sorted(t for t in target_cols if t not in tables)


def _rollback(pg: PgConnection) -> None:
    try:
        pg.execute("ROLLBACK")
    except Exception:  # the connection is gone: the server rolled back already
        pass
