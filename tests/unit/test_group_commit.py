"""GroupCommit: callers of one event-loop turn share a transaction, each sees those before it, a
failure is only its own caller's, and a locked store fails the batch without leaving it stuck.

The gevent cases run in a subprocess with gevent's monkey patching, as a gunicorn gevent worker does.
Every case runs on both store backends (a SQLite file, a PostgreSQL database)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

from proxy.store.group import GroupCommit
from proxy.store.limits import LimitRow
from tests.harness import REPO
from tests.stores import Backend

GEVENT_SCRIPT = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
from proxy.store.backend import open_store
from proxy.store.group import GroupCommit
from proxy.store.limits import LimitRow

store = open_store(sys.argv[1], lock_wait_s=0.3)
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
with store.snapshot() as tx:
    row = tx._run("SELECT charged FROM limiter_state WHERE scope='s'").fetchone()
rows = row[0] if row else 0
print(json.dumps({"results": [j.value for j in jobs], "batches": group.batches, "ops": group.ops,
                  "rows": rows}))
"""


def run_gevent(database: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, database, mode], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_callers_of_one_turn_share_one_transaction_and_see_each_other(any_backend: Backend) -> None:
    out = run_gevent(any_backend.database, "ok")
    assert out["batches"] == 1 and out["ops"] == 20
    # each operation saw exactly the ones queued before it: 0, 1, …, 19 in arrival order
    assert [r[1] for r in out["results"]] == list(range(20))
    assert out["rows"] == 20


def test_a_failing_operation_fails_alone(any_backend: Backend) -> None:
    out = run_gevent(any_backend.database, "fail")
    assert out["results"][7] == ["error", "ValueError"]
    others = [r for i, r in enumerate(out["results"]) if i != 7]
    assert all(r[0] == "ok" for r in others)
    assert sorted(r[1] for r in others) == list(range(19))  # re-run one by one, still exact
    assert out["rows"] == 19


def test_locked_store_fails_the_batch_and_the_next_call_works(any_backend: Backend) -> None:
    any_backend.open().close()  # migrated
    with any_backend.lock():  # another process holds the write lock
        out = run_gevent(any_backend.database, "ok")
        assert {tuple(r) for r in out["results"]} == {("error", "StoreUnavailable")}
    out = run_gevent(any_backend.database, "ok")
    assert out["rows"] == 20


def test_threads_exact_counts(any_backend: Backend) -> None:
    store = any_backend.open()
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
