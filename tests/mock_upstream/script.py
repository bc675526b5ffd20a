"""Behaviours (how the mock misbehaves) and the rule table that maps requests to them.

A ``Behaviour`` is a bag of optional knobs; builders (``error``, ``delay``, ``pace``, ``hold``,
``reset_after``, ``hang``, ...) each set one and compose with ``+`` (the right side wins on conflicts).
A rule matches on key / model / dialect (None = any). Every matching rule applies, newest winning on
conflicts, and each match consumes one of the rule's ``times``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace
from typing import Any

_FIELDS = (
    "status", "body", "headers", "retry_delay", "invalid_key", "delay", "chunks", "chunk_delay",
    "hold", "hold_after", "reset_after", "hang", "text", "replay", "require_thought_signature",
)


@dataclass(frozen=True)
class Behaviour:
    status: int | None = None  # answer with this error status (body = dialect default unless given)
    body: Any = None  # dict (JSON) | str | bytes, used with status
    headers: dict | None = None  # extra response headers
    retry_delay: str | None = None  # Gemini 429 RetryInfo.retryDelay override, e.g. "2s"
    invalid_key: bool = False  # the dialect's own "bad API key" error
    delay: float | None = None  # seconds before the response headers
    chunks: int | None = None  # number of text pieces in a stream
    chunk_delay: float | None = None  # seconds before each content chunk after the first
    hold: Any = None  # threading.Event | seconds | event name (str), waited after `hold_after` chunks
    hold_after: int = 1
    reset_after: int | None = None  # abort the connection (RST) after n content chunks; 0 = no response
    hang: float | None = None  # never answer (for at most this many seconds, or until stop)
    text: str | None = None  # override the reply text
    replay: str | None = None  # a fixture file name sent verbatim as the body (SSE split per event)
    require_thought_signature: bool = False  # Gemini 3: 400 if a history functionCall lacks its signature

    def __add__(self, other: Behaviour) -> Behaviour:
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if getattr(other, f.name) != f.default}
        return replace(self, **changes)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, threading.Event):
                raise ValueError("a threading.Event hold cannot cross processes; use a name or seconds")
            if isinstance(value, bytes):
                value = value.decode()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Behaviour:
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        return cls(**data)


def error(status: int, body: Any = None, headers: dict | None = None, *, retry_delay: str | None = None
          ) -> Behaviour:
    """Answer with an error status; the body defaults to the dialect's real envelope for that status."""
    return Behaviour(status=status, body=body, headers=headers, retry_delay=retry_delay)


def invalid_key() -> Behaviour:
    """The dialect's bad-key error (Gemini: 400 API_KEY_INVALID fixture; OpenAI/Anthropic/Ollama: 401)."""
    return Behaviour(invalid_key=True)


def delay(seconds: float) -> Behaviour:
    return Behaviour(delay=seconds)


def pace(chunks: int | None = None, delay: float | None = None) -> Behaviour:
    """Stream shape: number of text pieces and the pause before each content chunk after the first."""
    return Behaviour(chunks=chunks, chunk_delay=delay)


def hold(until: Any, after: int = 1) -> Behaviour:
    """After `after` content chunks, wait for an Event (or named event, see release()) or for seconds."""
    return Behaviour(hold=until, hold_after=after)


def reset_after(n_chunks: int) -> Behaviour:
    """Abort the TCP connection (RST, no clean end) after n content chunks; 0 = before any response."""
    return Behaviour(reset_after=n_chunks)


def hang(seconds: float = 60.0) -> Behaviour:
    """Accept the request and never answer (bounded by `seconds` and by the server stopping)."""
    return Behaviour(hang=seconds)


def reply(text: str) -> Behaviour:
    return Behaviour(text=text)


def replay(fixture: str, status: int | None = None) -> Behaviour:
    """Send a recorded fixture body verbatim (e.g. 'gemini-stream-prompt-blocked.sse')."""
    return Behaviour(replay=fixture, status=status)


def require_thought_signature() -> Behaviour:
    return Behaviour(require_thought_signature=True)


@dataclass
class Rule:
    id: int
    behaviour: Behaviour
    key: str | None = None
    model: str | None = None
    dialect: str | None = None
    times: int | None = None  # None = forever
    hits: int = 0
    extra: dict = field(default_factory=dict)

    def matches(self, key: str | None, model: str | None, dialect: str) -> bool:
        return ((self.key is None or self.key == key)
                and (self.model is None or self.model == model)
                and (self.dialect is None or self.dialect == dialect))


class RuleTable:
    """Thread-safe list of rules; ``resolve`` picks and consumes the matching ones atomically."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._next_id = 1

    def add(self, behaviour: Behaviour, *, key: str | None = None, model: str | None = None,
            dialect: str | None = None, times: int | None = None) -> int:
        with self._lock:
            rule = Rule(self._next_id, behaviour, key, normalize_model(model), dialect, times)
            self._next_id += 1
            self._rules.append(rule)
            return rule.id

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def resolve(self, key: str | None, model: str | None, dialect: str) -> Behaviour:
        result = Behaviour()
        with self._lock:
            for rule in list(self._rules):  # oldest first, so newer rules override
                if not rule.matches(key, model, dialect):
                    continue
                rule.hits += 1
                result = result + rule.behaviour
                if rule.times is not None and rule.hits >= rule.times:
                    self._rules.remove(rule)
        return result

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [{"id": r.id, "key": r.key, "model": r.model, "dialect": r.dialect, "times": r.times,
                     "hits": r.hits, "behaviour": _safe_dict(r.behaviour)} for r in self._rules]


def _safe_dict(b: Behaviour) -> dict:
    try:
        return b.to_dict()
    except ValueError:
        return {"hold": "<event>"}


def normalize_model(model: str | None) -> str | None:
    return model.removeprefix("models/") if model else model


def as_behaviour(value: Behaviour | list | tuple | dict | None) -> Behaviour:
    """Accept one behaviour, a list to compose, or a dict (HTTP control)."""
    if value is None:
        return Behaviour()
    if isinstance(value, Behaviour):
        return value
    if isinstance(value, dict):
        return Behaviour.from_dict(value)
    result = Behaviour()
    for item in value:
        result = result + as_behaviour(item)
    return result
