"""Migrations are applied by number: one with a lower number that arrives after a higher one (branches
merged in another order) still runs; a schema newer than the code is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from proxy.store import db


def test_a_lower_numbered_migration_merged_later_still_runs(tmp_path: Path) -> None:
    migs = tmp_path / "migrations"
    migs.mkdir()
    (migs / "0001_a.sql").write_text("CREATE TABLE a (x INTEGER);")
    (migs / "0003_c.sql").write_text("CREATE TABLE c (x INTEGER);")
    conn = db.connect(tmp_path / "k.db")
    assert db.migrate(conn, migs) == ["0001_a.sql", "0003_c.sql"]
    (migs / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);")
    assert db.migrate(conn, migs) == ["0002_b.sql"]
    assert conn.execute("SELECT COUNT(*) FROM b").fetchone()[0] == 0
    assert db.migrate(conn, migs) == []
    (migs / "0003_c.sql").unlink()
    (migs / "0002_b.sql").unlink()
    with pytest.raises(db.DatabaseError, match="newer than this keyrelay"):
        db.migrate(conn, migs)
    conn.close()
