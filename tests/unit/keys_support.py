"""Shared helpers for the key-manager tests (no tests here; imported by the test_keys_* modules)."""
from __future__ import annotations

import time

from proxy.keys import KeyPool, KeySettings, KeySpec

SECRETS = ["AIzaSyTEST-secret-alpha-0001", "AIzaSyTEST-secret-bravo-0002", "AIzaSyTEST-secret-charlie-003"]
SPECS = [KeySpec("gemini", s, label=f"g{i}") for i, s in enumerate(SECRETS)] + [KeySpec("ollama", None)]
FAST = KeySettings(refresh_interval_s=0.05, flush_interval_s=0.05, breaker_failures=3, breaker_open_s=30.0,
                   default_cooldown_s=60.0, revalidate_interval_s=300.0, probe_timeout_s=60.0)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_pool(path, clock=None, settings=FAST, specs=SPECS, **kw) -> KeyPool:
    pool = KeyPool(str(path), settings, clock=clock or time.time, **kw)
    getattr(pool.store, "start_listening", lambda: None)()  # PostgreSQL: as a serving worker does
    pool.sync(list(specs))
    return pool


def eventually(check, timeout: float = 1.0) -> float:
    """Poll ``check`` until truthy; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.01)
