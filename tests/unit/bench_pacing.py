"""µs per KeyPool.acquire + record with quota pacing off, on (no limit known: counted in the batch) and on
with limits known (admitted from leased slices), on a real SQLite file (one process, no contention).

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m tests.unit.bench_pacing [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from proxy.errors import OK
from proxy.keys import KeyPool, KeySettings, KeySpec

MODEL = "gemini-2.5-flash"
HIGH = {"g": {MODEL: {"rpm": 10**9, "tpm": 10**12, "rpd": 10**12}}}


def main(n: int = 20000) -> None:
    variants = {"off": KeySettings(pacing=False, refresh_interval_s=0.0),
                "on": KeySettings(refresh_interval_s=0.0),
                "on + limits": KeySettings(refresh_interval_s=0.0, quota_limits=HIGH)}
    for name, settings in variants.items():
        with tempfile.TemporaryDirectory(dir=str(Path.cwd())) as d, \
                KeyPool(str(Path(d) / "bench.db"), settings, start_flusher=False) as pool:
            pool.sync([KeySpec("g", f"bench-secret-{i}") for i in range(4)])
            started = time.perf_counter()
            for i in range(n):
                key = pool.acquire("g", MODEL)
                pool.record(key.id, MODEL, OK, latency_ms=5.0, tokens=30)
                if i % 250 == 0:  # the flusher's work, at its usual pace under ~1,000 req/s
                    pool.flush()
            print(f"{name:12} {(time.perf_counter() - started) / n * 1e6:6.1f} µs per acquire + record")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
