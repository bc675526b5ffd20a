"""One database on either backend for the store-level tests: the ``any_backend`` / ``any_store``
fixtures of tests/conftest.py hand these out, once per backend ("sqlite", "postgresql").

A ``Backend`` is one database (a SQLite file in the test's tmp_path, or a fresh database on the
throwaway PostgreSQL server) with what the tests need beside the store itself: the ``server.database``
setting, more stores on it (another worker), a holder of its write lock from another connection, and
plain SQL outside the store (to look at rows, or to age/corrupt them) in the placeholders both engines
take here (``?``).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from proxy.store.base import KeyStore

BACKENDS = ("sqlite", "postgresql")


class LockHolder:
    """Holds the store's write lock from another connection until ``release()``: SQLite's file lock
    (``BEGIN EXCLUSIVE``) or the PostgreSQL store's advisory write lock."""

    def __init__(self, backend: Backend) -> None:
        self.kind = backend.kind
        if backend.kind == "sqlite":
            self._sqlite = sqlite3.connect(backend.database, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("BEGIN EXCLUSIVE")
        else:
            from proxy.store.pg_conn import PgConnection, parse_url
            from proxy.store.postgres import WRITE_LOCK

            self._pg = PgConnection(parse_url(backend.database), timeout_s=10)
            self._pg.execute("BEGIN")
            self._pg.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

    def release(self) -> None:
        if self.kind == "sqlite":
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        else:
            self._pg.execute("ROLLBACK")
            self._pg.close()

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Backend:
    """One database on ``kind``; ``database`` is its ``server.database`` setting (file path or URL)."""

    def __init__(self, kind: str, database: str, fresh: Any = None) -> None:
        self.kind = kind
        self.database = database
        self._stores: list[KeyStore] = []
        self._fresh = fresh
        self._others: list[Backend] = []

    def fresh(self) -> Backend:
        """Another empty database of the same kind (closed with this one)."""
        other = Backend(self.kind, self._fresh(len(self._others) + 1), self._fresh)
        self._others.append(other)
        return other

    @property
    def postgres(self) -> bool:
        return self.kind == "postgresql"

    def open(self, *, lock_wait_s: float = 2.0, **kw: Any) -> KeyStore:
        """A store on this database (migrated); several are several workers. Closed at teardown."""
        if self.postgres:
            from proxy.store.postgres import PostgresStore

            pg = PostgresStore(self.database, lock_wait_s=lock_wait_s, **kw)
            pg.start_listening()  # as a serving worker does (Gateway.start_background)
            store: KeyStore = pg
        else:
            from proxy.store.sqlite import SQLiteStore

            store = SQLiteStore(self.database, lock_wait_s=lock_wait_s, **kw)
        self._stores.append(store)
        return store

    def lock(self) -> LockHolder:
        """Take the write lock from another connection (``with backend.lock(): ...``)."""
        return LockHolder(self)

    def sql(self, statement: str, params: tuple | list = ()) -> list[tuple]:
        """Run one statement on its own connection (committed at once); its rows."""
        if self.postgres:
            from proxy.store.pg_conn import PgConnection, parse_url

            conn = PgConnection(parse_url(self.database), timeout_s=10)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        conn = sqlite3.connect(self.database, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def scalar(self, statement: str, params: tuple | list = ()) -> Any:
        rows = self.sql(statement, params)
        return rows[0][0] if rows else None

    def changes(self, store: KeyStore) -> int:
        """How many committed changes ``store`` has seen: its change token on SQLite; on PostgreSQL the
        notifications it heard (its token also turns over every few seconds, by design), read after
        a pause long enough for a notification just sent to arrive."""
        if not self.postgres:
            return store.change_token()
        import time

        getattr(store, "start_listening", lambda: None)()  # a KeyPool's own store (no-op if running)
        time.sleep(0.3)
        return int(store._notified)  # type: ignore[attr-defined]

    def warm(self, store: KeyStore, connections: int = 2) -> None:
        """Open ``connections`` of a PostgreSQL store's pool now (they are opened on first need, and a
        connect takes far longer than a query); nothing to do for SQLite's single connection."""
        if not self.postgres:
            return
        from contextlib import ExitStack

        with ExitStack() as stack:
            for _ in range(connections):
                stack.enter_context(store.snapshot())

    def dump(self) -> bytes:
        """Everything the database holds, as bytes to search (for "no secret at rest" checks): the
        SQLite file with its WAL, or every row of every table of the PostgreSQL database."""
        if not self.postgres:
            path = Path(self.database)
            return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        tables = [r[0] for r in self.sql("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'public' ORDER BY table_name")]
        return "\n".join(repr(self.sql(f'SELECT * FROM "{t}"')) for t in tables).encode()

    def close(self) -> None:
        for other in self._others:
            other.close()
        for store in self._stores:
            try:
                store.close()
            except Exception:  # closed by the test already
                pass


def make_backend(kind: str, tmp_path: Path, request: Any, name: str = "store.db") -> Backend:
    """``kind``'s database for one test (PostgreSQL's ``pg_url`` fixture is only asked for then)."""
    if kind == "postgresql":
        server = request.getfixturevalue("pg_server")
        return Backend(kind, request.getfixturevalue("pg_url"), lambda n: server.create_database())
    return Backend(kind, str(tmp_path / name), lambda n: str(tmp_path / f"fresh{n}.db"))
