"""Cooldown arithmetic for a (key, model): until when the key must not be used for that model."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def next_daily_reset(now: float, tz: str) -> float:
    """Epoch of the next local midnight in ``tz`` strictly after ``now`` (DST-correct via zoneinfo)."""
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(now, zone)
    nxt = local.date() + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()


def cooldown_until(now: float, *, retry_after: float | None, daily: bool, default_s: float,
                   min_s: float, tz: str, max_s: float = math.inf) -> float:
    """When a quota-limited key may be used again for that model.

    ``retry_after`` (seconds, fractional allowed) wins when the upstream said so, else ``default_s``;
    a spent daily quota lasts at least until the next daily reset; nothing lasts longer than ``max_s``
    (an upstream asking for ten days must not take a key out of service for ten days).
    """
    if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
        wait = default_s
    else:
        wait = max(min_s, float(retry_after))
    until = now + wait
    if daily:
        until = max(until, next_daily_reset(now, tz))
    return min(until, now + max_s)

