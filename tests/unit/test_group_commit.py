"""GroupCommit: callers of one event-loop turn share a transaction, each sees those before it, a
failure is only its own caller's, and a locked store fails the batch without leaving it stuck.

The gevent cases run in a subprocess with gevent's monkey patching, as a gunicorn gevent worker does.
Every case runs on both store backends (a SQLite file, a PostgreSQL database)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from proxy.store.group import GroupCommit
from proxy.store.limits import LimitBatch, LimitRow
from tests.harness import REPO
from tests.stores import Backend

GEVENT_SCRIPT = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
from proxy.store.backend import open_store
from proxy.store.group import GroupCommit
from proxy.store.limits import LimitBatch, LimitRow

store = open_store(sys.argv[1], lock_wait_s=0.3)
mode, batched = sys.argv[2], sys.argv[3] == "batched"
group = GroupCommit(store, batch=LimitBatch if batched else None)

detached_errors = []

def op(i):
    def fn(tx):
        if mode.endswith("fail") and i == 7:
            raise ValueError("op 7 is broken")
        row = tx.limit_rows(["s"]).get("s") or LimitRow("s")
        n = row.charged
        row.charged += 1
        tx.put_limit_row(row)
        return n
    # "detached…": the odd operations do not wait (their errors go to a handler)
    detached = (lambda exc: detached_errors.append([i, type(exc).__name__])) \
        if mode.startswith("detached") and i % 2 else None
    try:
        return ("ok", group.run_detached(fn, 0.3, detached) if detached else group.run(fn, 0.3))
    except Exception as exc:
        return ("error", type(exc).__name__)

jobs = [gevent.spawn(op, i) for i in range(20)]
gevent.joinall(jobs, timeout=10)
with store.snapshot() as tx:
    row = tx._run("SELECT charged FROM limiter_state WHERE scope='s'").fetchone()
rows = row[0] if row else 0
print(json.dumps({"results": [j.value for j in jobs], "batches": group.batches, "ops": group.ops,
                  "rows": rows, "detached_errors": detached_errors}))
"""


def run_gevent(database: str, mode: str, batched: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, database, mode,
                          "batched" if batched else "plain"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "row-batch"])
def test_callers_of_one_turn_share_one_transaction_and_see_each_other(any_backend: Backend,
                                                                      batched: bool) -> None:
    out = run_gevent(any_backend.database, "ok", batched)
    assert out["batches"] == 1 and out["ops"] == 20
    # each operation saw exactly the ones queued before it: 0, 1, …, 19 in arrival order
    assert [r[1] for r in out["results"]] == list(range(20))
    assert out["rows"] == 20


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "row-batch"])
def test_a_failing_operation_fails_alone(any_backend: Backend, batched: bool) -> None:
    out = run_gevent(any_backend.database, "fail", batched)
    assert out["results"][7] == ["error", "ValueError"]
    others = [r for i, r in enumerate(out["results"]) if i != 7]
    assert all(r[0] == "ok" for r in others)
    assert sorted(r[1] for r in others) == list(range(19))  # re-run one by one, still exact
    assert out["rows"] == 19


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "row-batch"])
def test_detached_callers_do_not_wait_and_keep_their_place(any_backend: Backend, batched: bool) -> None:
    out = run_gevent(any_backend.database, "detached", batched)
    results = out["results"]
    # op 0 leads; the others queue behind it, the odd ones return at once without a value …
    assert all(results[i] == ["ok", None] for i in range(1, 20, 2))
    # … yet ran in arrival order in the leader's one transaction: the even ones saw them
    assert [results[i][1] for i in range(0, 20, 2)] == list(range(0, 20, 2))
    assert out["batches"] == 1 and out["rows"] == 20 and out["detached_errors"] == []


def test_a_detached_failure_goes_to_its_handler(any_backend: Backend) -> None:
    out = run_gevent(any_backend.database, "detached-fail", True)
    assert out["detached_errors"] == [[7, "ValueError"]]  # run alone after the batch failed, then reported
    assert out["results"][7] == ["ok", None] and out["rows"] == 19
    waited = [out["results"][i][1] for i in range(0, 20, 2)]
    assert waited == sorted(waited) and len(set(waited)) == 10


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


class _CountingTx:
    """A transaction stand-in that counts the statements LimitBatch sends."""

    def __init__(self) -> None:
        self.table: dict[str, LimitRow] = {}
        self.reads: list[list[str]] = []
        self.writes: list[str] = []

    def limit_rows(self, scopes: list[str]) -> dict[str, LimitRow]:
        self.reads.append(scopes)
        return {s: self.table[s] for s in scopes if s in self.table}

    def put_limit_row(self, row: LimitRow) -> None:
        self.writes.append(row.scope)
        self.table[row.scope] = row


def test_a_row_batch_reads_each_row_once_and_writes_each_changed_row_once() -> None:
    tx = _CountingTx()
    old = LimitRow("old")
    old.exists = True
    tx.table["old"] = old
    batch = LimitBatch(tx)
    for i in range(10):  # ten operations, each seeing the ones before it
        rows = batch.limit_rows(["old", "new"])
        assert ("new" in rows) == (i > 0)  # created by the first operation, seen by the next
        for scope in ("old", "new"):
            row = rows.get(scope) or LimitRow(scope)
            assert row.charged == i
            row.charged += 1
            batch.put_limit_row(row)
    assert tx.reads == [["old", "new"]] and tx.writes == []  # nothing written before the flush
    batch.flush()
    assert sorted(tx.writes) == ["new", "old"]
    assert tx.table["old"].charged == tx.table["new"].charged == 10
    batch.limit_rows(["other"])  # a scope not read yet is read; a known absent one is not read again
    batch.limit_rows(["other", "old"])
    assert tx.reads == [["old", "new"], ["other"]]
