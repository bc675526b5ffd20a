"""Circuit breaker per key: closed → open (after N consecutive transient failures) → half-open (one
probe) → closed on success, open again on failure. Plain data in, plain data out.

Stored states: ``closed``; ``open`` until ``open_until``; ``half_open`` with a probe claimed at
``probe_at``. An ``open`` circuit past ``open_until`` is *claimable*: the first worker to flip it to
``half_open`` with a conditional UPDATE owns the single probe. A claimed probe that never reports
(worker killed) becomes claimable again after ``probe_timeout``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import errors

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


@dataclass(frozen=True)
class Breaker:
    state: str = CLOSED
    open_until: float | None = None
    failures: int = 0  # consecutive transient failures
    last_failure_at: float | None = None
    probe_at: float | None = None


def claimable(b: Breaker, now: float, probe_timeout: float) -> bool:
    """May a request claim the half-open probe now? (mirrors the SQL claim condition)"""
    if b.state == OPEN:
        return b.open_until is None or now >= b.open_until
    if b.state == HALF_OPEN:
        return b.probe_at is None or now >= b.probe_at + probe_timeout
    return False


def view(b: Breaker, now: float, probe_timeout: float) -> tuple[str, float | None]:
    """(what an operator sees: closed|open|half_open, seconds until it may pass again or None)."""
    if b.state == CLOSED:
        return CLOSED, None
    if b.state == OPEN and b.open_until is not None and now < b.open_until:
        return OPEN, b.open_until - now
    if b.state == HALF_OPEN and not claimable(b, now, probe_timeout):
        return HALF_OPEN, (b.probe_at or now) + probe_timeout - now
    return HALF_OPEN, None  # claimable: usable by exactly one probe


def on_outcome(b: Breaker, outcome: str, now: float, *, threshold: int, window: float,
               open_s: float) -> Breaker:
    """The breaker after one request outcome."""
    if outcome == errors.TRANSIENT:
        if b.state == HALF_OPEN:
            return Breaker(OPEN, now + open_s, b.failures + 1, now, None)
        if b.state == OPEN:
            return b  # requests already in flight when it opened; nothing new to learn
        recent = b.last_failure_at is not None and now - b.last_failure_at <= window
        failures = (b.failures if recent else 0) + 1
        if failures >= threshold:
            return Breaker(OPEN, now + open_s, failures, now, None)
        return replace(b, failures=failures, last_failure_at=now)
    # any answer that is not a transient failure proves the upstream reachable with this key
    if b.state == HALF_OPEN:
        return Breaker()
    if b.state == CLOSED and outcome == errors.OK and b.failures:
        return replace(b, failures=0)
    return b
