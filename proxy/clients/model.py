"""Plain data of the client side: clients, their limits, token usage, accounting periods, key format.

A client key is ``kr-`` + 43 url-safe characters (32 random bytes). Only its SHA-256 (hex) is stored,
with a display hint (``kr-AbCd…xyz``); the key itself is shown once, when created or rotated.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

KEY_PREFIX = "kr-"
PERIODS = ("day", "week", "month")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    return f"{key[:7]}…{key[-3:]}"


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and len(value) == len(KEY_PREFIX) + 43


def new_client_id() -> str:
    return "c_" + secrets.token_hex(6)


def config_client_id(name: str) -> str:
    """A config client's id: stable across restarts and workers, derived from its name."""
    return "c_" + hashlib.sha256(f"config\0{name}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelLimit:
    """Limits for the models a glob matches (within one client)."""

    pattern: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    team: str | None = None
    models: tuple[str, ...] = ()  # globs of model names the client may use; empty = all
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    model_limits: tuple[ModelLimit, ...] = ()
    budget_usd: float | None = None
    budget_period: str = "month"
    token_quota: int | None = None
    quota_period: str = "month"
    expires_at: float | None = None  # epoch seconds
    enabled: bool = True
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
    source: str = "runtime"  # "config" (from the YAML, read-only at runtime) or "runtime" (admin API)
    key_hint: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    last_used_at: float | None = None
    revoked_at: float | None = None  # set by revoke: the client's keys answer 401 "revoked"


@dataclass(frozen=True)
class Usage:
    """Tokens one request used, as the upstream reported them (zeros when it did not)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0  # of prompt, read from a cache
    reasoning: int = 0  # of completion

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _int(obj: object, *path: str) -> int:
    for name in path:
        if not isinstance(obj, dict):
            return 0
        obj = obj.get(name)
    return int(obj) if isinstance(obj, int | float) and not isinstance(obj, bool) and obj > 0 else 0


def merge_usage(acc: Usage | None, raw: dict) -> Usage:
    """Fold one usage report (OpenAI ``usage`` or Anthropic's) into ``acc``: streams report usage in
    several events (Anthropic: input in ``message_start``, output in ``message_delta``), each a running
    total, so every field keeps its largest value."""
    if "input_tokens" in raw or "output_tokens" in raw:  # Anthropic: input excludes cache reads/writes
        cached = _int(raw, "cache_read_input_tokens")
        prompt = _int(raw, "input_tokens") + cached + _int(raw, "cache_creation_input_tokens")
        u = Usage(prompt, _int(raw, "output_tokens"), cached, 0)
    else:
        u = Usage(_int(raw, "prompt_tokens"), _int(raw, "completion_tokens"),
                  _int(raw, "prompt_tokens_details", "cached_tokens"),
                  _int(raw, "completion_tokens_details", "reasoning_tokens"))
    if acc is None:
        return u
    return Usage(max(acc.prompt, u.prompt), max(acc.completion, u.completion), max(acc.cached, u.cached),
                 max(acc.reasoning, u.reasoning))


def period_bounds(period: str, now: float, tz: str) -> tuple[float, float]:
    """[start, end) in epoch seconds of the ``day`` / ``week`` (Monday) / ``month`` holding ``now``,
    in time zone ``tz``."""
    zone = ZoneInfo(tz)
    t = datetime.fromtimestamp(now, zone)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = start + timedelta(days=1)
    elif period == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    # wall-clock arithmetic, then back to epoch: days across a DST change keep their local midnight
    return (start.replace(tzinfo=zone).timestamp(), end.replace(tzinfo=zone).timestamp())


@dataclass
class Admission:
    """What admission granted one request; ``Limiter.settle`` gives back what it did not use."""

    client: Client
    model: str
    reserved_tokens: int = 0  # the tpm reservation (prompt estimate + max_tokens)
    lease: str | None = None  # the max_concurrent slot, released when the request ends
    scopes: tuple[Any, ...] = ()  # the limiter's own bookkeeping (which windows were charged)
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the response


@dataclass
class Finished:
    """One data-plane request after its answer (for a stream: after its last byte)."""

    at: float  # epoch seconds when it started
    request_id: str
    endpoint: str  # the path, e.g. /v1/chat/completions
    client: Client | None
    model: str | None  # as the client asked
    provider: str | None  # the route that answered (None when none did)
    upstream_model: str | None
    key_id: str | None
    status: int
    outcome: str | None  # the last upstream attempt's outcome class
    usage: Usage | None
    latency_ms: float
    first_byte_ms: float | None
    stream: bool
    admission: Admission | None = None
    streamed_chars: int = 0  # text relayed to the client (what a stream cut short used, roughly)
    cached: bool = False  # answered from the response cache: no upstream key, no tokens, $0
