"""µs per admission and per settlement on a real SQLite file (one process, no contention), by the limits
a client has: each admission is settled before the next (in-flight leases stay few, as in life).

Two passes: ``own tx`` (every call its own transaction, wall time: what one idle worker pays) and
``batched`` (BATCH admissions, then their settlements, inside one transaction, as ``GroupCommit`` runs
them in a loaded gunicorn worker — proxy/store/group.py, each row read and written once per
transaction; CPU time of this process, so the figure is the
statements' cost without the commit and is less disturbed by other processes on the machine).

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m tests.unit.bench_limits [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from proxy.clients.limits import Limiter
from proxy.clients.model import Client, Finished, ModelLimit, Usage
from proxy.store.limits import LimitBatch
from proxy.store.sqlite import SQLiteStore
from tests.unit.test_client_limits import config

HIGH = 10**9
BATCH = 10  # operations per transaction in the batched pass (~8-12 at c=16: bench/RESULTS.md)


class _InTx:
    """Stands in for ``Limiter.group``: runs every operation in the transaction already open."""

    def __init__(self, tx: object) -> None:
        self.tx = tx

    def run(self, fn, timeout):  # noqa: ANN001, ANN201
        return fn(self.tx)
VARIANTS = {
    "rpm": dict(rpm=HIGH),
    "rpm+tpm": dict(rpm=HIGH, tpm=HIGH),
    "rpm+tpm+max_concurrent": dict(rpm=HIGH, tpm=HIGH, max_concurrent=HIGH),
    "rpm+tpm+budget": dict(rpm=HIGH, tpm=HIGH, budget_usd=1e9),
    "all (+ a model limit)": dict(rpm=HIGH, tpm=HIGH, max_concurrent=HIGH, budget_usd=1e9,
                                  model_limits=(ModelLimit("m*", rpm=HIGH, tpm=HIGH),)),
}


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory(dir=str(Path.cwd())) as d:
        store = SQLiteStore(Path(d) / "bench.db")
        lim = Limiter(config(), store, time.time, slices=False)  # the transaction path, each call
        body = {"model": "m", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 50}
        for rep in range(2):  # the first pass warms up
            for label, limits in VARIANTS.items():
                c = Client(id=f"c_{len(label)}_{rep}", name=label, **limits)  # type: ignore[arg-type]
                t_admit = t_settle = 0.0
                for _ in range(n):
                    t0 = time.perf_counter()
                    a = lim.admit(c, "m", body)
                    t1 = time.perf_counter()
                    assert a is not None
                    lim.settle(a, Finished(at=time.time(), request_id="r", endpoint="/v1/chat/completions",
                                           client=c, model="m", provider="p", upstream_model="m", key_id=None,
                                           status=200, outcome="ok", usage=Usage(30, 50), latency_ms=1,
                                           first_byte_ms=1, stream=False, admission=a), 0.001)
                    t2 = time.perf_counter()
                    t_admit += t1 - t0
                    t_settle += t2 - t1
                if rep:
                    print(f"{label:24} own tx   admit {t_admit / n * 1e6:7.1f} µs, settle "
                          f"{t_settle / n * 1e6:7.1f} µs per call (n={n})")
                    batched(lim, store, c, body, n)
        store.close()


def batched(lim: Limiter, store: SQLiteStore, c: Client, body: dict, n: int) -> None:
    own = lim.group
    t_admit = t_settle = 0.0
    try:
        for _ in range(n // BATCH):
            with store.transaction() as tx:
                rows = LimitBatch(tx)
                lim.group = _InTx(rows)  # type: ignore[assignment]
                t0 = time.process_time()
                adms = [lim.admit(c, "m", body) for _ in range(BATCH)]
                t1 = time.process_time()
                for a in adms:
                    assert a is not None
                    lim.settle(a, Finished(at=time.time(), request_id="r", endpoint="/v1/chat/completions",
                                           client=c, model="m", provider="p", upstream_model="m", key_id=None,
                                           status=200, outcome="ok", usage=Usage(30, 50), latency_ms=1,
                                           first_byte_ms=1, stream=False, admission=a), 0.001)
                rows.flush()
                t2 = time.process_time()
                t_admit += t1 - t0
                t_settle += t2 - t1
    finally:
        lim.group = own
    m = n // BATCH * BATCH
    print(f"{c.name:24} batched  admit {t_admit / m * 1e6:7.1f} µs, settle {t_settle / m * 1e6:7.1f} µs"
          f" per call, CPU ({BATCH} a transaction)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
