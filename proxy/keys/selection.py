"""Choosing a key among usable candidates: smooth weighted round robin (as in nginx).

Deterministic: over sum(weights) picks each candidate is chosen in proportion to its weight, and
the picks interleave rather than clump. Each worker rotates the candidate order by its own offset so
that workers starting together do not all pick the same first key.
"""
from __future__ import annotations

from collections.abc import MutableMapping, Sequence


def effective_weight(weight: float, health: float, floor: float) -> float:
    """weight × health, never below weight × floor (a degraded key still gets a trickle)."""
    return weight * max(floor, min(1.0, health))


def rotate(items: Sequence, offset: int) -> list:
    if not items:
        return []
    k = offset % len(items)
    return list(items[k:]) + list(items[:k])


def smooth_wrr(candidates: Sequence[tuple[str, float]], current: MutableMapping[str, float]) -> str:
    """Pick one id; ``current`` is the caller's per-pool running state (updated in place).

    Ties go to the earlier candidate. Candidates absent from this call keep their running value.
    """
    if not candidates:
        raise ValueError("no candidates")
    total = 0.0
    best: str | None = None
    best_val = 0.0
    for cid, w in candidates:
        w = max(0.0, w)
        total += w
        val = current.get(cid, 0.0) + w
        current[cid] = val
        if best is None or val > best_val:
            best, best_val = cid, val
    assert best is not None  # candidates is not empty
    current[best] = best_val - total
    return best
