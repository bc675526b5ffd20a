"""Per key and model history: rollups by minute (kept 48 h) and by hour (kept 30 days), pure logic.

Each upstream attempt the pool records (``KeyPool.record``) is added to a ``HistoryBuffer`` in memory:
one row per (resolution, bucket start, key, model) with requests, outcomes, HTTP 429s, tokens, the
latency sum / count / max and a fixed latency histogram. The pool's batched flush (every 0.25 s)
writes the buffer in the same transaction as the key counters (``store/history.py`` adds each row to
the stored one, so every worker's rows add up). Cooldowns and open circuits are recorded as periods.

**Percentiles.** Latency (of attempts that answered, outcome ``ok``; for a stream, until its last
chunk) is counted in ``LATENCY_EDGES_MS`` buckets per row. p50 / p95 of any set of rows come from the
summed buckets: find the bucket holding the rank, interpolate linearly inside it (its lower edge to its
upper edge, narrowed to the rows' min and max when they fall inside it; the open last bucket ends at
the max). The answer is exact to the bucket's width (a
1-2-5 series: at most a factor ~2.5 apart), which is enough to see a key slow down.
"""
from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .. import errors

MINUTE, HOUR = 60, 3600
RESOLUTIONS = (MINUTE, HOUR)
RETENTION_S = {MINUTE: 48 * 3600, HOUR: 30 * 86400}
LATENCY_EDGES_MS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 60_000)  # upper edges
BUCKETS = len(LATENCY_EDGES_MS) + 1  # the last one is open-ended
OUTCOMES = errors.OUTCOMES  # ok, quota, auth, transient, client
MAX_WINDOW_S = RETENTION_S[HOUR]
MAX_POINTS = 2000
PERIOD_KINDS = ("cooldown", "circuit_open")


@dataclass
class Row:
    """Sums of one (resolution, bucket, key, model)."""

    step: int
    bucket: int
    key_id: str
    model: str
    provider: str
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    http_429: int = 0
    tokens: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    latency_max: float = 0.0
    latency_min: float = 0.0  # meaningful only when latency_n > 0
    hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, other: Row) -> None:
        self.requests += other.requests
        for o in OUTCOMES:
            self.outcomes[o] += other.outcomes[o]
        self.http_429 += other.http_429
        self.tokens += other.tokens
        if other.latency_n:
            self.latency_min = other.latency_min if not self.latency_n else min(self.latency_min,
                                                                                 other.latency_min)
        self.latency_sum += other.latency_sum
        self.latency_n += other.latency_n
        self.latency_max = max(self.latency_max, other.latency_max)
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]


@dataclass(frozen=True)
class Period:
    key_id: str
    kind: str  # "cooldown" (per model) | "circuit_open" (model "")
    model: str
    start: float
    until: float


def latency_bucket(ms: float) -> int:
    """The histogram bucket of ``ms``: the first whose upper edge is above it (the last is open)."""
    return bisect.bisect_right(LATENCY_EDGES_MS, ms)


def percentile(hist: Sequence[int], q: float, max_ms: float | None = None,
               min_ms: float | None = None) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram (see the module docstring); None when empty.
    ``min_ms`` / ``max_ms`` (of the same samples) narrow the bucket they fall in."""
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            lo = 0.0 if i == 0 else float(LATENCY_EDGES_MS[i - 1])
            hi = float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else max(lo, max_ms or lo)
            if min_ms is not None and lo < min_ms < hi:
                lo = min_ms
            if max_ms is not None:
                hi = min(hi, max(lo, max_ms))
            return round(lo + (hi - lo) * (rank - seen) / n, 1)
        seen += n
    return None


class HistoryBuffer:
    """Rows and periods not yet written; not thread-safe (the pool calls it under its lock)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, str, str], Row] = {}
        self.periods: list[Period] = []

    def add(self, at: float, key_id: str, provider: str, model: str, outcome: str, *,
            latency_ms: float | None = None, status: int | None = None, tokens: int = 0) -> None:
        timed = outcome == errors.OK and latency_ms is not None and latency_ms >= 0
        slot = latency_bucket(latency_ms) if timed and latency_ms is not None else 0
        used = max(0, int(tokens or 0))
        for step in RESOLUTIONS:
            bucket = int(at // step * step)
            k = (step, bucket, key_id, model)
            row = self.rows.get(k)
            if row is None:
                row = self.rows[k] = Row(step, bucket, key_id, model, provider)
            row.requests += 1
            row.outcomes[outcome] += 1
            if status == 429:
                row.http_429 += 1
            row.tokens += used
            if timed and latency_ms is not None:
                row.latency_sum += latency_ms
                row.latency_n += 1
                row.latency_min = latency_ms if row.latency_n == 1 else min(row.latency_min, latency_ms)
                row.latency_max = max(row.latency_max, latency_ms)
                row.hist[slot] += 1

    def period(self, key_id: str, kind: str, model: str, start: float, until: float) -> None:
        if until > start:
            self.periods.append(Period(key_id, kind, model, start, until))

    def take(self) -> tuple[list[Row], list[Period]]:
        rows, periods = list(self.rows.values()), self.periods
        self.rows, self.periods = {}, []
        return rows, periods

    def put_back(self, rows: list[Row], periods: list[Period]) -> None:
        """A batch that failed to flush goes back in front of what was recorded meanwhile."""
        for row in rows:
            k = (row.step, row.bucket, row.key_id, row.model)
            newer = self.rows.get(k)
            if newer is not None:
                row.add(newer)
            self.rows[k] = row
        self.periods[:0] = periods


# ------------------------------------------------------------------------------------------ queries

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, name: str) -> int:
    """``"24h"`` → 86400; ValueError naming ``name`` otherwise."""
    m = _DURATION.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"Invalid {name!r}: expected a duration like 90s, 5m, 24h or 7d, got {text!r}.")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def plan(window_s: int, step_s: int) -> int:
    """Which resolution answers a query (raises ValueError for an impossible one): minutes while the
    window is within their retention and the step a whole number of minutes, else hours."""
    if window_s > MAX_WINDOW_S:
        raise ValueError(f"Invalid 'window': at most {MAX_WINDOW_S // 86400}d of history is kept.")
    if step_s < MINUTE or step_s % MINUTE:
        raise ValueError("Invalid 'step': a whole number of minutes (1m or more).")
    if step_s > window_s:
        raise ValueError("Invalid 'step': larger than the window.")
    if window_s // step_s > MAX_POINTS:
        raise ValueError(f"Invalid 'step': the window would have more than {MAX_POINTS} points.")
    if window_s <= RETENTION_S[MINUTE] and step_s % HOUR:
        return MINUTE
    if step_s % HOUR:
        raise ValueError("Invalid 'step': past 48h only hourly history is kept: use a step of whole hours.")
    return HOUR


def series(rows: Iterable[Row], periods: Iterable[Period], start: int, end: int, step: int) -> dict:
    """Rows summed into ``step`` buckets from ``start`` (aligned) to ``end``: the JSON of a history answer."""
    n = max(1, math.ceil((end - start) / step))
    acc = [Row(step, start + i * step, "", "", "") for i in range(n)]
    for row in rows:
        i = int((row.bucket - start) // step)
        if 0 <= i < n:
            acc[i].add(row)
    points = []
    for r in acc:
        points.append({
            "t": r.bucket, "requests": r.requests, "ok": r.outcomes[errors.OK],
            "errors": {o: r.outcomes[o] for o in OUTCOMES if o != errors.OK},
            "http_429": r.http_429, "tokens": r.tokens,
            "latency_ms": {"avg": round(r.latency_sum / r.latency_n, 1) if r.latency_n else None,
                           "p50": percentile(r.hist, 0.5, r.latency_max, r.latency_min),
                           "p95": percentile(r.hist, 0.95, r.latency_max, r.latency_min),
                           "max": round(r.latency_max, 1) if r.latency_n else None},
        })
    total = Row(step, start, "", "", "")
    for r in acc:
        total.add(r)
    return {
        "start": start, "end": end, "step_s": step, "points": points,
        "totals": {"requests": total.requests, "ok": total.outcomes[errors.OK],
                   "errors": {o: total.outcomes[o] for o in OUTCOMES if o != errors.OK},
                   "http_429": total.http_429, "tokens": total.tokens,
                   "latency_ms": {"p50": percentile(total.hist, 0.5, total.latency_max, total.latency_min),
                                  "p95": percentile(total.hist, 0.95, total.latency_max, total.latency_min)}},
        "periods": merge_periods(periods, start, end),
    }


def per_key(rows: Iterable[Row], start: int, end: int, step: int) -> dict[str, list[list[int]]]:
    """Per key, ``[requests, ok]`` per ``step`` bucket (the dashboard's sparklines)."""
    n = max(1, math.ceil((end - start) / step))
    out: dict[str, list[list[int]]] = {}
    for row in rows:
        i = int((row.bucket - start) // step)
        if 0 <= i < n:
            cells = out.setdefault(row.key_id, [[0, 0] for _ in range(n)])
            cells[i][0] += row.requests
            cells[i][1] += row.outcomes[errors.OK]
    return out


def merge_periods(periods: Iterable[Period], start: float, end: float) -> list[dict]:
    """The periods overlapping [start, end), those of the same key, kind and model that overlap joined
    (each worker records its own); their real start and end, not clipped to the window."""
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for p in periods:
        if p.until > start and p.start < end:
            groups.setdefault((p.key_id, p.kind, p.model), []).append((p.start, p.until))
    out = []
    for (kid, kind, model), spans in sorted(groups.items()):
        spans.sort()
        joined = [list(spans[0])]
        for s, e in spans[1:]:
            if s <= joined[-1][1]:
                joined[-1][1] = max(joined[-1][1], e)
            else:
                joined.append([s, e])
        out += [{"key_id": kid, "kind": kind, "model": model or None, "start": s, "until": e}
                for s, e in joined]
    return out
