"""Quota arithmetic for pacing, on plain data: which limits apply to a (scope, model), and whether the
next request fits under them.

A *scope* is what an upstream counts together: a key (``k:<key id>``), or a project (``p:<provider>:
<name>``) when keys carry ``project:`` (Gemini limits belong to a Google Cloud project, not a key).

Windows (``KINDS``): ``rpm`` / ``tpm`` count requests / tokens in a sliding minute; ``rpd`` / ``tpd``
count since the last daily reset (midnight in ``key_manager.daily_reset_tz``). The sliding minute is
``MINUTE_S`` long, a little more than 60 s: a request we admit reaches the upstream a moment later than
we counted it, so our window must end no earlier than the upstream's.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from .cooldown import next_daily_reset

KINDS = ("rpm", "tpm", "rpd", "tpd")
PER_MINUTE = ("rpm", "tpm")
TOKENS = ("tpm", "tpd")
REQUESTS = ("rpm", "rpd")
MINUTE_S = 61.0
CONFIGURED = "configured"  # the strongest source; learned ones: "gemini_429", "headers"


@dataclass(frozen=True)
class Limit:
    value: int
    source: str
    learned_at: float | None = None  # None for configured limits


@dataclass(frozen=True)
class Usage:
    """What a scope used for one model: in the sliding minute (with its oldest entry) and today."""

    minute_requests: int = 0
    minute_tokens: int = 0
    oldest_at: float | None = None  # the oldest entry of the sliding minute
    day_requests: int = 0
    day_tokens: int = 0

    def used(self, kind: str) -> int:
        return {"rpm": self.minute_requests, "tpm": self.minute_tokens, "rpd": self.day_requests,
                "tpd": self.day_tokens}[kind]


@dataclass(frozen=True)
class Block:
    """A window at its cap: the next request would pass ``limit``; capacity returns at ``resets_at``."""

    kind: str
    limit: int
    used: int
    resets_at: float
    source: str

    def view(self) -> dict:
        return {"window": self.kind, "limit": self.limit, "used": self.used,
                "resets_at": round(self.resets_at, 3), "source": self.source}


def scope_of(provider: str, key_id: str, project: str | None) -> str:
    return f"p:{provider}:{project}" if project else f"k:{key_id}"


def configured_for(limits: Mapping[str, Mapping[str, int]], model: str) -> dict[str, int]:
    """The configured limits of ``model``: its exact entry, then matching globs, then ``"*"``, each filling
    in the windows the more specific ones left out."""
    order = [model] if model in limits else []
    order += sorted(p for p in limits if p not in (model, "*") and fnmatch.fnmatchcase(model, p))
    order += ["*"] if "*" in limits else []
    out: dict[str, int] = {}
    for pattern in order:
        for kind, value in limits[pattern].items():
            out.setdefault(kind, value)
    return out


def merge(configured: Mapping[str, int], learned: Mapping[str, Limit]) -> dict[str, Limit]:
    """Per window the strongest source: configured, else learned."""
    out = dict(learned)
    out.update({k: Limit(v, CONFIGURED) for k, v in configured.items()})
    return out


def day_start(now: float, tz: str) -> float:
    """Epoch of the last local midnight in ``tz`` at or before ``now`` (the current day window's start)."""
    zone = ZoneInfo(tz)
    d = datetime.fromtimestamp(now, zone).date()
    return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()


def resets_at(kind: str, usage: Usage, now: float, tz: str) -> float:
    """When the window ``kind`` next frees capacity: its oldest entry leaves the sliding minute, or the
    daily reset."""
    if kind in PER_MINUTE:
        return (usage.oldest_at if usage.oldest_at is not None else now) + MINUTE_S
    return next_daily_reset(now, tz)


def blocks(limits: Mapping[str, Limit], usage: Usage, now: float, tz: str) -> list[Block]:
    """The windows the next request would pass (empty: it fits). Requests count 1 each; tokens are
    known only after an answer, so a token window blocks once it is spent."""
    out = []
    for kind in KINDS:
        lim = limits.get(kind)
        if lim is None:
            continue
        used = usage.used(kind)
        if (used >= lim.value) if kind in TOKENS else (used + 1 > lim.value):
            out.append(Block(kind, lim.value, used, resets_at(kind, usage, now, tz), lim.source))
    return out


def soonest(found: list[Block]) -> float:
    """When a refused scope can take a request again: every blocking window must have freed capacity."""
    return max((b.resets_at for b in found), default=-math.inf)


def window_view(limits: Mapping[str, Limit], usage: Usage, now: float, tz: str) -> dict[str, dict]:
    """``{"rpm": {"limit", "used", "resets_at", "source", "learned_at"}, ...}`` for the admin listing."""
    return {kind: {"limit": lim.value, "used": usage.used(kind),
                   "resets_at": round(resets_at(kind, usage, now, tz), 3), "source": lim.source,
                   "learned_at": lim.learned_at}
            for kind, lim in ((k, limits[k]) for k in KINDS if k in limits)}
