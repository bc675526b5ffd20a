"""The in-memory view of one key's row (plain data; the pool keeps one per key, the store returns them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .breaker import Breaker

STATUS_OK, STATUS_INVALID = "ok", "invalid"


@dataclass
class KeyState:
    id: str
    provider: str
    label: str | None = None
    config_weight: float = 1.0
    weight_override: float | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    status: str = STATUS_OK
    status_reason: str | None = None
    status_at: float | None = None
    retired: bool = False
    retired_at: float | None = None
    breaker: Breaker = field(default_factory=Breaker)
    health: float = 1.0
    health_at: float = 0.0
    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    latency_samples: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_used_at: float | None = None
    last_probe_at: float | None = None
    created_at: float = 0.0

    @property
    def weight(self) -> float:
        return self.config_weight if self.weight_override is None else self.weight_override
