"""Warnings that repeat while a condition lasts (a database outage: every flush round, every request)
logged once per interval per kind, with how many were held back, instead of hundreds of lines a second."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

EVERY_S = 30.0
_lock = threading.Lock()
_last: dict[str, tuple[float, int]] = {}  # kind -> (logged at, held back since)


def warn(log: logging.Logger, kind: str, message: str, *args: Any, extra: dict | None = None,
         every_s: float = EVERY_S) -> None:
    now = time.monotonic()
    with _lock:
        at, held = _last.get(kind, (-float("inf"), 0))
        if now - at < every_s:
            _last[kind] = (at, held + 1)
            return
        _last[kind] = (now, 0)
    if held:
        message += f" ({held} more like this in the last {now - at:.0f} s)"
    log.warning(message, *args, extra={"event": kind, **(extra or {})})
