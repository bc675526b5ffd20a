"""Migrations are applied by number: one with a lower number that arrives after a higher one (branches
merged in another order) still runs; a schema newer than the code is refused. The same rules on both
backends (``db`` for SQLite, ``pg_schema`` for PostgreSQL)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.store import db
from tests.stores import Backend


class _Migrator:
    """One connection to ``backend``'s database and its backend's ``migrate``."""

    def __init__(self, backend: Backend) -> None:
        self.postgres = backend.postgres
        if self.postgres:
            from proxy.store import pg_schema
            from proxy.store.pg_conn import PgConnection, parse_url

            self.conn: Any = PgConnection(parse_url(backend.database), timeout_s=10)
            self._migrate = pg_schema.migrate
        else:
            self.conn = db.connect(backend.database)
            self._migrate = db.migrate

    def migrate(self, directory: Path) -> list[str]:
        return self._migrate(self.conn, directory)

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def test_a_lower_numbered_migration_merged_later_still_runs(tmp_path: Path, any_backend: Backend) -> None:
    migs = tmp_path / "migrations"
    migs.mkdir()
    (migs / "0001_a.sql").write_text("CREATE TABLE a (x INTEGER);")
    (migs / "0003_c.sql").write_text("CREATE TABLE c (x INTEGER);")
    conn = _Migrator(any_backend)
    assert conn.migrate(migs) == ["0001_a.sql", "0003_c.sql"]
    (migs / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);")
    assert conn.migrate(migs) == ["0002_b.sql"]
    assert conn.count("b") == 0
    assert conn.migrate(migs) == []
    (migs / "0003_c.sql").unlink()
    (migs / "0002_b.sql").unlink()
    with pytest.raises(db.DatabaseError, match="newer than this keyrelay"):
        conn.migrate(migs)
    conn.close()
