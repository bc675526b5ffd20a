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

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from proxy.providers.http import Transport


@dataclass(frozen=True)
class Timeouts:
    """Limits of one upstream call; ``deadline`` (a time.monotonic() value) bounds all of it."""

    connect: float = 5.0  # DNS, TCP, proxy tunnel and TLS handshake together
    first_byte: float = 60.0  # from the request sent until the whole response head arrived
    idle: float = 60.0  # between two stream lines (whole answers: between two reads)
    deadline: float = math.inf  # the request's deadline: no phase of the call goes past it


@dataclass(frozen=True)
class Call:
    """Everything an adapter needs for one upstream request."""

    base_url: str  # no trailing slash
    model: str  # the upstream's model id, e.g. "gemini-2.5-flash"
    key: str | None  # the secret; never log it, never put it in an error
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: dict[str, str] = field(default_factory=dict)  # extra headers from config
    transport: Transport | None = None  # the provider's proxy / TLS / keep-alive (None: direct, verified)
    learned: list = field(default_factory=list, compare=False)  # quota limits an answer's headers revealed


class Adapter(Protocol):
    def chat(self, call: Call, req: dict) -> dict: ...

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]: ...

    def embeddings(self, call: Call, req: dict) -> dict: ...

    def probe(self, call: Call) -> None:
        """A cheap call that succeeds iff the key works (used to revalidate an invalid key)."""


class AnthropicNative(Protocol):
    """An optional capability: an adapter whose upstream speaks Anthropic Messages itself. Anthropic
    clients' bodies go through it unchanged (apart from the model name); ``client`` holds the client
    headers it forwards (``anthropic-beta``)."""

    speaks_anthropic: bool

    def messages(self, call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict: ...

    def messages_stream(
        self, call: Call, body: dict, client: Mapping[str, str] | None = None
    ) -> Iterator[tuple[str, dict]]: ...

    def count_tokens(self, call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict: ...


def native_anthropic(adapter: object) -> AnthropicNative | None:
    """The adapter as an AnthropicNative when it has that capability, else None."""
    return cast(AnthropicNative, adapter) if getattr(adapter, "speaks_anthropic", False) is True else None
