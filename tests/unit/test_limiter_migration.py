"""Migration 0013 on a database with 0004's limit tables in use: the token buckets and each client's
latest spend per period carry over into limiter_state (a budget is not reset by an upgrade), the
per-request tables are gone, and the limiter reads what was carried over."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proxy.clients.limits import Limiter, RateLimited
from proxy.clients.model import Client, period_bounds
from proxy.store import db
from proxy.store.sqlite import SQLiteStore
from tests.unit.test_client_limits import T0, Clock, body, config


def test_buckets_and_current_spend_carry_over(tmp_path: Path) -> None:
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(db.MIGRATIONS_DIR.glob("*.sql")):
        if int(f.name[:4]) < 13:
            shutil.copy(f, old / f.name)
    path = tmp_path / "old.db"
    conn = db.connect(path)
    db.migrate(conn, old)
    day, _ = period_bounds("day", T0, "UTC")
    month, month_end = period_bounds("month", T0, "UTC")
    conn.execute("INSERT INTO limit_buckets(scope, level, at, charged, reserved)"
                 " VALUES ('c_a', 12.5, ?, 70, 3)", (T0,))
    conn.execute("INSERT INTO limit_hits(scope, at) VALUES ('c_a', ?)", (T0,))
    rows = [("c_a", "day", day - 86400, day, 9, 900, 0.9, 0),  # yesterday: history, not carried
            ("c_a", "day", day, day + 86400, 2, 200, 0.25, 1),
            ("c_a", "month", month, month_end, 11, 1100, 1.15, 1),
            ("c_b", "week", day, day + 7 * 86400, 1, 10, 0.001, 0)]
    conn.executemany("INSERT INTO client_spend(client_id, period, period_start, period_end, requests, tokens,"
                     " cost_usd, unpriced) VALUES (?,?,?,?,?,?,?,?)", rows)
    conn.close()

    store = SQLiteStore(path)  # migrates to the newest
    try:
        with store.snapshot() as tx:
            assert tx.bucket("c_a") == (12.5, T0, 70, 3)
            assert tx.bucket("c_b") is None
            assert tx.spend("c_a", "day", day) == {"requests": 2, "tokens": 200, "cost_usd": 0.25,
                                                   "unpriced": 1}
            assert tx.spend("c_a", "month", month)["cost_usd"] == 1.15
            assert tx.spend("c_a", "week", day)["requests"] == 0  # none recorded for the week
            assert tx.spend("c_b", "week", day)["tokens"] == 10
        names = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"limit_hits", "limit_windows", "limit_leases", "limit_buckets"}.isdisjoint(names)
        lim = Limiter(config(), store, Clock(T0))
        over = Client(id="c_a", name="a", budget_usd=1.0, budget_period="month")
        with pytest.raises(RateLimited) as e:  # 1.15 already spent this month, before the upgrade
            lim.admit(over, "m", body())
        assert e.value.code == "budget_exceeded"
        assert lim.spend(over)["requests"] == 11
    finally:
        store.close()
