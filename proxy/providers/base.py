"""The contract every upstream adapter fulfils, plus the plain data it is called with.

An adapter speaks one upstream dialect. The internal lingua franca is the OpenAI Chat Completions shape
as plain dicts: adapters take an OpenAI-shaped request and return an OpenAI ``chat.completion`` dict or
yield ``chat.completion.chunk`` dicts. Errors are raised as ``proxy.errors.UpstreamError`` with the
outcome class already decided by the adapter (it knows its dialect).

Streaming contract: ``chat_stream`` returns a generator; the HTTP request is sent on the first
``next()``. An upstream error status raises ``UpstreamError`` *before* the first chunk is yielded (so
the relay can fail over); a failure after chunks were yielded raises ``UpstreamError`` with outcome
TRANSIENT. Closing the generator (client went away) must close the upstream connection (try/finally).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.api.shapes import MAX_DEPTH, within_depth


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_byte: float = 60.0  # until the response headers / first byte
    idle: float = 60.0  # between two stream chunks


@dataclass(frozen=True)
class Call:
    """Everything an adapter needs for one upstream request."""

    base_url: str  # no trailing slash
    model: str  # the upstream's model id, e.g. "gemini-2.5-flash"
    key: str | None  # the secret; never log it, never put it in an error
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: dict[str, str] = field(default_factory=dict)  # extra headers from config


def loads_embedded(text: str) -> Any:
    """JSON a client put inside a string (tool call arguments, a tool result), parsed like ``json.loads``.
    Raises ValueError also when it nests deeper than MAX_DEPTH levels: Python's parser would raise
    RecursionError, and orjson, which writes the upstream body, stops at 254 levels."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not within_depth(value, MAX_DEPTH):
        raise ValueError("JSON nested too deeply")
    return value


class Adapter(Protocol):
    def chat(self, call: Call, req: dict) -> dict: ...

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]: ...

    def embeddings(self, call: Call, req: dict) -> dict: ...

    def list_models(self, call: Call) -> list[str]: ...

    def probe(self, call: Call) -> None:
        """A cheap call that succeeds iff the key works (used to revalidate an invalid key)."""
