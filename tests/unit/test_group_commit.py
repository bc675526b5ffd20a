"""GroupCommit: callers of one event-loop turn share a transaction, each sees those before it, a
failure is only its own caller's, and a locked store fails the batch without leaving it stuck.

The gevent cases run in a subprocess with gevent's monkey patching, as a gunicorn gevent worker does."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from proxy.store.group import GroupCommit
from proxy.store.limits import LimitRow
from proxy.store.sqlite import SQLiteStore
from tests.harness import REPO

GEVENT_SCRIPT = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
from proxy.store.group import GroupCommit
from proxy.store.limits import LimitRow
from proxy.store.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1], lock_wait_s=0.3)
group = GroupCommit(store)
mode = sys.argv[2]

def op(i):
    def fn(tx):
        if mode == "fail" and i == 7:
            raise ValueError("op 7 is broken")
        row = tx.limit_rows(["s"]).get("s") or LimitRow("s")
        n = row.charged
        row.charged += 1
        tx.put_limit_row(row)
        return n
    try:
        return ("ok", group.run(fn, 0.3))
    except Exception as exc:
        return ("error", type(exc).__name__)

jobs = [gevent.spawn(op, i) for i in range(20)]
gevent.joinall(jobs, timeout=10)
import sqlite3
row = sqlite3.connect(sys.argv[1]).execute("SELECT charged FROM limiter_state WHERE scope='s'").fetchone()
rows = row[0] if row else 0
print(json.dumps({"results": [j.value for j in jobs], "batches": group.batches, "ops": group.ops,
                  "rows": rows}))
"""


def run_gevent(db: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, str(db), mode], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_callers_of_one_turn_share_one_transaction_and_see_each_other(tmp_path: Path) -> None:
    out = run_gevent(tmp_path / "g.db", "ok")
    assert out["batches"] == 1 and out["ops"] == 20
    # each operation saw exactly the ones queued before it: 0, 1, …, 19 in arrival order
    assert [r[1] for r in out["results"]] == list(range(20))
    assert out["rows"] == 20


def test_a_failing_operation_fails_alone(tmp_path: Path) -> None:
    out = run_gevent(tmp_path / "g.db", "fail")
    assert out["results"][7] == ["error", "ValueError"]
    others = [r for i, r in enumerate(out["results"]) if i != 7]
    assert all(r[0] == "ok" for r in others)
    assert sorted(r[1] for r in others) == list(range(19))  # re-run one by one, still exact
    assert out["rows"] == 19


def test_locked_store_fails_the_batch_and_the_next_call_works(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    SQLiteStore(db).close()  # migrated
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        out = run_gevent(db, "ok")
        assert {tuple(r) for r in out["results"]} == {("error", "StoreUnavailable")}
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out = run_gevent(db, "ok")
    assert out["rows"] == 20


def test_threads_exact_counts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    group = GroupCommit(store)
    seen: list[int] = []

    def fn(tx) -> int:  # noqa: ANN001
        row = tx.limit_rows(["s"]).get("s") or LimitRow("s")
        n = row.charged
        row.charged += 1
        tx.put_limit_row(row)
        return n

    def worker() -> None:
        for _ in range(50):
            seen.append(group.run(fn, 2.0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seen) == list(range(400))  # no two operations saw the same count
    with store.snapshot() as tx:
        assert tx.limit_rows(["s"])["s"].charged == 400
    store.close()
