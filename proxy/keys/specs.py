"""Plain data the key manager is configured with and hands out."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class KeySpec:
    """One key from config; ``secret`` None for keyless providers (ollama, mock)."""

    provider: str
    secret: str | None = field(default=None, repr=False)
    weight: float = 1.0
    label: str | None = None
    project: str | None = None  # keys of one project share quota counters and learned limits


@dataclass(frozen=True)
class Key:
    """What ``KeyPool.acquire`` returns: the secret travels only to the provider call."""

    id: str
    provider: str
    secret: str | None = field(repr=False)
    label: str | None
    weight: float


@dataclass(frozen=True)
class KeySettings:
    default_cooldown_s: float = 60.0  # quota without retry_after
    min_cooldown_s: float = 1.0  # a "Retry-After: 0" 429 still cools the key briefly
    daily_reset_tz: str = "America/Los_Angeles"  # Gemini daily quotas reset at midnight Pacific
    provider_reset_tz: dict[str, str] = field(default_factory=dict, hash=False)  # per-provider override
    breaker_failures: int = 5  # consecutive transient failures that open the circuit...
    breaker_window_s: float = 60.0  # ...each within this long of the previous one
    breaker_open_s: float = 30.0  # open time before one half-open probe is let through
    probe_timeout_s: float = 60.0  # a claimed half-open probe that never reports frees up after this
    health_half_life_s: float = 300.0  # past evidence fades toward "healthy" with this half-life
    health_alpha: float = 0.2  # weight of one new observation
    health_floor: float = 0.05  # selection weight never drops below weight × floor
    slow_latency_ms: float = 20000.0  # successes slower than this count as partly bad
    revalidate_interval_s: float = 300.0
    flush_interval_s: float = 0.25
    refresh_interval_s: float = 0.1
    max_cooldown_s: float = 172800.0  # no cooldown lasts longer (upstream Retry-After, snapshot import)
    busy_timeout_ms: int = 2000  # longest (cooperative) wait for the database write lock
    max_error_len: int = 300
    pacing: bool = True  # admit requests only under the known quota limits of their key's scope
    quota_limits: dict = field(default_factory=dict, hash=False)  # provider → model glob → {rpm, ...}

    def __post_init__(self) -> None:
        for tz in (self.daily_reset_tz, *self.provider_reset_tz.values()):
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {tz!r} for daily quota resets") from None
        positive = ("default_cooldown_s", "max_cooldown_s", "breaker_window_s", "breaker_open_s",
                    "probe_timeout_s", "health_half_life_s", "revalidate_interval_s", "flush_interval_s",
                    "slow_latency_ms")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"KeySettings.{name} must be a positive number, got {v!r}")
        if self.default_cooldown_s > self.max_cooldown_s:
            raise ValueError("KeySettings.default_cooldown_s must not exceed max_cooldown_s")
        if self.breaker_failures < 1:
            raise ValueError("KeySettings.breaker_failures must be >= 1")
        if not 0 < self.health_alpha <= 1 or not 0 <= self.health_floor <= 1:
            raise ValueError("KeySettings.health_alpha must be in (0, 1] and health_floor in [0, 1]")

    def reset_tz(self, provider: str) -> str:
        return self.provider_reset_tz.get(provider, self.daily_reset_tz)
