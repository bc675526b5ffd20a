"""Usage accounting costs: cost + queueing per request, flush transaction time by batch size, report and
/v1/key query times over ~300k rows. Run: ``PYTHONPATH=$PWD .venv/bin/python tests/usage_bench.py``."""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from proxy.clients.model import Client, Finished, Usage
from proxy.clients.usage import UsageLog
from proxy.config import parse_config
from proxy.store.sqlite import SQLiteStore

DAY = 86400
CLIENTS = [Client(id=f"c_{i:04d}", name=f"n{i}") for i in range(20)]


def finished(i: int, at: float) -> Finished:
    return Finished(at=at, request_id=os.urandom(8).hex(), endpoint="/v1/chat/completions",
                    client=CLIENTS[i % 20], model=f"m{i % 5}", provider="mock", upstream_model="mock-1",
                    key_id="k_1", status=200, outcome="ok", usage=Usage(100, 50), latency_ms=10.0,
                    first_byte_ms=2.0, stream=bool(i % 2))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    cfg = parse_config({"providers": [{"name": "mock", "type": "mock"}], "auth": {"mode": "open"},
                        "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-1"}]}],
                        "prices": {"mock-1": {"input": 1, "output": 2}}})
    store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "bench.db"))
    log = UsageLog(cfg, store)
    now = time.time()
    per_record = []
    for n in (1, 10, 100, 500, 2000):
        flushes = []
        for _ in range(5):
            for i in range(n):
                f = finished(i, now - (i % DAY))
                t0 = time.perf_counter()
                log.record(f, log.cost(f))
                per_record.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            log.flush()
            flushes.append(time.perf_counter() - t0)
        print(f"flush of {n:5d} records (batches of 500): median {ms(statistics.median(flushes))}")
    print(f"cost + record per request: median {statistics.median(per_record) * 1e6:.1f} us")
    for b in range(150):  # 300k rows over 30 days
        for i in range(2000):
            f = finished(i, now - 30 * DAY * ((b * 2000 + i) / 300_000))
            log.record(f, log.cost(f))
        log.flush()
    for groups in ((), ("day",), ("client", "model"), ("route", "key")):
        t0 = time.perf_counter()
        rows = log.report(now - 30 * DAY, now + 1, groups)
        print(f"report, 30 days, group_by={','.join(groups) or '-'}: {ms(time.perf_counter() - t0)}"
              f" ({len(rows)} rows)")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        log.summary(CLIENTS[3])
        times.append(time.perf_counter() - t0)
    print(f"/v1/key summary (a month): median {ms(statistics.median(times))}")
    log.close()
    store.close()


if __name__ == "__main__":
    main()
