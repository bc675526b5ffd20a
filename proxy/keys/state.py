"""The in-memory view of one key's row (plain data; the pool keeps one per key)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from .breaker import Breaker

STATUS_OK, STATUS_INVALID = "ok", "invalid"

# Columns of the ``keys`` table, in order (migrations/0002_keys.sql).
COLUMNS = (
    "id", "provider", "label", "config_weight", "weight_override", "enabled", "disabled_reason",
    "status", "status_reason", "status_at", "retired", "retired_at",
    "circuit", "open_until", "failures", "last_failure_at", "probe_at",
    "health", "health_at", "requests", "errors", "latency_ms_total", "latency_samples",
    "last_error", "last_error_at", "last_used_at", "last_probe_at", "created_at",
)
SELECT_KEYS = f"SELECT {', '.join(COLUMNS)} FROM keys"


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


def from_row(row: sqlite3.Row) -> KeyState:
    return KeyState(
        id=row["id"], provider=row["provider"], label=row["label"],
        config_weight=row["config_weight"], weight_override=row["weight_override"],
        enabled=bool(row["enabled"]), disabled_reason=row["disabled_reason"],
        status=row["status"], status_reason=row["status_reason"], status_at=row["status_at"],
        retired=bool(row["retired"]), retired_at=row["retired_at"],
        breaker=breaker_from_row(row),
        health=row["health"], health_at=row["health_at"],
        requests=row["requests"], errors=row["errors"],
        latency_ms_total=row["latency_ms_total"], latency_samples=row["latency_samples"],
        last_error=row["last_error"], last_error_at=row["last_error_at"],
        last_used_at=row["last_used_at"], last_probe_at=row["last_probe_at"], created_at=row["created_at"],
    )


def breaker_from_row(row: sqlite3.Row) -> Breaker:
    return Breaker(row["circuit"], row["open_until"], row["failures"], row["last_failure_at"],
                   row["probe_at"])
