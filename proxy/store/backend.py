"""Which backend ``server.database`` names, and the few calls that differ by backend.

``postgresql://user:password@host:port/db`` (or ``postgres://``) selects PostgreSQL; ``sqlite:///path``
or a plain path selects SQLite. Everything else in keyrelay talks to the ``KeyStore`` it gets here.
"""
from __future__ import annotations

from .base import KeyStore
from .pg_conn import is_postgres_url, parse_url

DEFAULT_POOL_SIZE = 4


def is_postgres(database: str) -> bool:
    return is_postgres_url(database)


def sqlite_path(database: str) -> str:
    """The file of a SQLite ``database`` setting (``sqlite:///abs/path``, ``sqlite:rel/path`` or a path)."""
    for prefix in ("sqlite:///", "sqlite://", "sqlite:"):
        if database.startswith(prefix):
            rest = database[len(prefix):]
            return "/" + rest if prefix == "sqlite:///" else rest
    return database


def display(database: str) -> str:
    """The setting as it may be shown (logs, errors, CLI output): a PostgreSQL URL without its password."""
    if is_postgres(database):
        try:
            return parse_url(database).display
        except ValueError:
            return "postgresql://(invalid URL)"
    return sqlite_path(database)


def open_store(database: str, *, lock_wait_s: float = 2.0, pool_size: int = DEFAULT_POOL_SIZE,
               migrate: bool = True) -> KeyStore:
    """The store of ``database``, migrated (raises ``db.DatabaseError`` when it cannot be used)."""
    from .db import DatabaseError

    if is_postgres(database):
        from .postgres import PostgresStore

        try:
            return PostgresStore(database, lock_wait_s=lock_wait_s, pool_size=pool_size, migrate=migrate)
        except ValueError as exc:
            raise DatabaseError(f"server.database: {exc}") from None
        except Exception as exc:  # StoreUnavailable while connecting: unusable at start-up
            if isinstance(exc, DatabaseError):
                raise
            raise DatabaseError(f"database unusable: {exc}") from None
    from .sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(database), lock_wait_s=lock_wait_s)


def migrate(database: str) -> tuple[list[str], int]:
    """Apply the pending migrations of ``database``: (names applied, schema version now)."""
    from . import db

    if is_postgres(database):
        from . import pg_schema
        from .pg_conn import PgConnection, PgUnavailable

        try:
            pg = PgConnection(parse_url(database), timeout_s=30.0, application_name="keyrelay-migrate")
        except ValueError as exc:
            raise db.DatabaseError(f"server.database: {exc}") from None
        except PgUnavailable as exc:
            raise db.DatabaseError(f"database unusable: {exc}") from None
        try:
            applied = pg_schema.migrate(pg)
            return applied, pg_schema.applied_version(pg)
        finally:
            pg.close()
    conn = db.connect(sqlite_path(database))
    try:
        applied = db.migrate(conn)
        return applied, db.applied_version(conn)
    finally:
        conn.close()


def readiness(database: str, *, write_timeout_s: float) -> str | None:
    """None when the database is there, fully migrated and writable, else the reason."""
    if is_postgres(database):
        from . import postgres

        return postgres.readiness(database, write_timeout_s=write_timeout_s)
    from . import sqlite

    return sqlite.readiness(sqlite_path(database), write_timeout_s=write_timeout_s)
