"""Rolling health score in [0, 1]: an exponentially weighted success rate whose old evidence fades.

Each observation moves the score ``alpha`` of the way toward its value (1 success, 0 failure, in
between for a slow success). Between observations the distance to 1 halves every ``half_life``
seconds, so a key that was bad an hour ago is not starved forever; successes recover it quickly.
"""
from __future__ import annotations

from .. import errors


def current(score: float, at: float, now: float, half_life: float) -> float:
    """The score at ``now``: past badness decays toward 1."""
    dt = max(0.0, now - at)
    return 1.0 - (1.0 - score) * 0.5 ** (dt / half_life)


def observe(score: float, at: float, now: float, x: float, *, half_life: float,
            alpha: float) -> tuple[float, float]:
    """Apply one observation ``x`` at ``now``; returns (new score, new timestamp)."""
    s = current(score, at, now, half_life)
    s += alpha * (x - s)
    return min(1.0, max(0.0, s)), max(at, now)


def observation(outcome: str, latency_ms: float | None, slow_ms: float) -> float | None:
    """What an outcome says about key health; None when it says nothing.

    Quota (cooldowns handle it), auth (the key goes invalid) and client errors leave health alone,
    so a 429 storm never makes every key look sick.
    """
    if outcome == errors.OK:
        if latency_ms is None or latency_ms <= slow_ms:
            return 1.0
        return max(0.5, slow_ms / latency_ms)
    if outcome == errors.TRANSIENT:
        return 0.0
    return None
