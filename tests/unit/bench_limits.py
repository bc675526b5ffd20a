"""µs per admission and per settlement on a real SQLite file (one process, no contention).

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m tests.unit.bench_limits [N]

"every limit": rpm + tpm + max_concurrent + a budget + one matching model limit (two rpm scopes, two
tpm scopes, a lease and the spend rows: every statement an admission can run); "rpm only": one scope."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from proxy.clients.limits import Limiter
from proxy.clients.model import Client, Finished, ModelLimit, Usage
from proxy.store.sqlite import SQLiteStore
from tests.unit.test_client_limits import config


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory(dir=str(Path.cwd())) as d:
        store = SQLiteStore(Path(d) / "bench.db")
        lim = Limiter(config(), store, time.time)
        full = Client(id="c_bench", name="bench", rpm=10**9, tpm=10**12, max_concurrent=10**6, budget_usd=1e9,
                      model_limits=(ModelLimit("m*", rpm=10**9, tpm=10**12),))
        rpm_only = Client(id="c_rpm", name="rpm", rpm=10**9)
        body = {"model": "m", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 50}
        for label, c in (("warm-up", full), ("every limit", full), ("rpm only", rpm_only)):
            t_admit = t_settle = 0.0
            for _ in range(n):  # settle each one before the next: in-flight leases stay few, as in life
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
            if label != "warm-up":  # the rpm windows hold n or 2n rows per scope
                print(f"{label:12} admit {t_admit / n * 1e6:7.1f} µs, settle {t_settle / n * 1e6:7.1f} µs"
                      f" per call (n={n})")
        store.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
