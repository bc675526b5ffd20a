"""Key history I/O: the reads behind ``/admin/api/.../history`` and the retention pruning that each
worker's background work runs (never the request path). Pure logic lives in ``history.py``."""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import cast

from ..background import claim
from ..store.base import KeyStore, StoreUnavailable
from ..store.history import HistoryTx
from . import history

log = logging.getLogger("keyrelay.keys")

PRUNE_INTERVAL_S = 600.0
PRUNE_BATCH = 2000
PRUNE_ROUNDS = 10  # per run and table: at most PRUNE_ROUNDS * PRUNE_BATCH rows, the rest next time


def read(store: KeyStore, now: float, window: str, step: str, *, key_id: str | None = None,
         provider: str | None = None, model: str | None = None, by_key: bool = False) -> dict:
    """The history answer for ``window`` back from ``now`` in ``step`` buckets (ValueError for bad
    parameters, with the message the API shows); ``by_key`` adds ``keys``: per key [requests, ok]
    per bucket."""
    window_s = history.parse_duration(window, "window")
    step_s = history.parse_duration(step, "step")
    resolution = history.plan(window_s, step_s)
    end = int(math.floor(now / step_s) + 1) * step_s  # the bucket holding now is the last one
    start = end - math.ceil(window_s / step_s) * step_s
    with store.snapshot() as tx:
        htx = cast(HistoryTx, tx)
        rows = htx.history(resolution, start, end, key_id=key_id, provider=provider, model=model)
        periods = htx.history_periods(start, end, key_id=key_id, provider=provider, model=model)
    out = history.series(rows, periods, start, end, step_s)
    out.update(window=window, step=step, resolution_s=resolution, now=now)
    if by_key:
        out["keys"] = history.per_key(rows, start, end, step_s)
    return out


def prune_once(store: KeyStore, now: float) -> int:
    """Delete rollups past their retention (minutes 48 h, hours 30 days) and periods that ended more
    than 30 days ago, in small transactions; how many rows went."""
    deleted = 0
    jobs: list[Callable[[HistoryTx], int]] = [
        *(lambda tx, s=step: tx.purge_history(s, now - history.RETENTION_S[s], PRUNE_BATCH)
          for step in history.RESOLUTIONS),
        lambda tx: tx.purge_periods(now - history.RETENTION_S[history.HOUR], PRUNE_BATCH),
    ]
    for job in jobs:
        for _ in range(PRUNE_ROUNDS):
            with store.transaction() as tx:
                n = job(cast(HistoryTx, tx))
            deleted += n
            if n < PRUNE_BATCH:
                break
    return deleted


def run_pruning(store: KeyStore, stop: threading.Event, interval: float = PRUNE_INTERVAL_S,
                clock: Callable[[], float] = time.time) -> None:
    """Prune now, then every ``interval`` seconds until ``stop`` is set (a greenlet under gevent)."""
    while True:
        try:  # one worker of all instances prunes (a claim per round)
            n = prune_once(store, clock()) if claim(store, "history_prune", interval * 0.9) else 0
            if n:
                log.info("key history pruned", extra={"event": "history_pruned", "rows": n})
        except StoreUnavailable as exc:
            log.warning("key history pruning deferred: %s", exc)
        except Exception:  # keep going; the next round retries
            log.exception("key history pruning failed")
        if stop.wait(interval):
            return
