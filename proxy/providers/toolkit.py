"""What every upstream adapter needs and no dialect owns: one copy, shared by all of them.

- ``header``: a case-insensitive header lookup on any mapping (plain dicts included);
- ``new_id`` / ``completion_id`` / ``tool_call_id``: the ids keyrelay makes up (``chatcmpl-…``, ``call_…``);
- ``text_of``: the plain text of an OpenAI message content (a string or a list of parts);
- ``tool_arguments``: the decoded arguments of an OpenAI tool call;
- ``json_body``: an error body (bytes, str or already decoded) as a Python value, or None;
- ``embedded_status``: the HTTP status an upstream wrote into a JSON error body (502 when it did not);
- ``encode_floats``: an embedding vector as the client asked for it (floats or base64 little-endian f32);
- ``assistant_message`` / ``completion_choice`` / ``completion`` / ``chunk`` / ``usage_chunk``: the
  OpenAI response objects, with every field OpenAI's schema requires (``refusal``, ``logprobs``);
  ``StreamChunks``: what the chunks of one stream share (id, created, model), for stream translators;
- ``status_error``: the status → outcome ladder; each adapter's ``classify_error`` decides its
  dialect's specifics (rate-limit hints, quota kinds, codes, messages) and ends with this ladder.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from proxy.errors import AUTH, CLIENT, QUOTA, TRANSIENT, UpstreamError
from proxy.json_depth import loads_embedded

# ---------------------------------------------------------------------------------------------------
# headers, ids, content


class HeaderLookup(Protocol):
    """Read access to request headers: a Mapping, or Werkzeug's ``Headers`` (not a Mapping)."""

    def get(self, key: str, /) -> str | None: ...


def header(headers: Mapping[str, Any] | None, name: str) -> Any:
    """The value of header ``name`` (lower case) in ``headers``, whatever its case there; None if absent."""
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def new_id(prefix: str) -> str:
    """``prefix`` + 24 random hex digits."""
    return prefix + uuid.uuid4().hex[:24]


def completion_id() -> str:
    return new_id("chatcmpl-")


def tool_call_id() -> str:
    return new_id("call_")


def text_of(content: Any, sep: str = "") -> str:
    """The plain text of an OpenAI content value: a string, or the text parts of a list joined by ``sep``
    (bare strings in the list count as text). None is "". Raises ValueError for any other type."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError("message content must be a string or a list of parts")
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in ("text", "input_text"):
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
    return sep.join(texts)


def tool_arguments(tool_call: Mapping[str, Any]) -> Any:
    """The decoded ``function.arguments`` of an OpenAI tool call (``{}`` when absent; a value that is
    already decoded stays as it is). Raises ValueError when they are not JSON."""
    raw = (tool_call.get("function") or {}).get("arguments") or "{}"
    return loads_embedded(raw) if isinstance(raw, str) else raw


# ---------------------------------------------------------------------------------------------------
# error bodies


def json_body(body: bytes | str | Mapping | list | None) -> Any:
    """A decoded error body: bytes and str are parsed (None when they are not JSON), the rest as is."""
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def embedded_status(code: Any) -> int:
    """An HTTP status written into a JSON body (int or digit string, 400..599); otherwise 502."""
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else 502


DEFAULT_SERVER_STATUSES: Mapping[int, int] = {408: 504, 503: 503}


def status_error(
    status: int,
    message: str,
    *,
    server_statuses: Mapping[int, int] = DEFAULT_SERVER_STATUSES,
    upstream_status: int | None = None,
    **kw: Any,
) -> UpstreamError:
    """The status → outcome ladder every dialect shares.

    401/403 → AUTH (same status), 429 → QUOTA 429, 408 and 5xx (and anything that is no 4xx) → TRANSIENT
    with the client status ``server_statuses`` names (default 502), other 4xx → CLIENT (same status).
    ``upstream_status`` defaults to ``status``; ``kw`` goes to UpstreamError (code, retry_after, daily).
    """
    kw["upstream_status"] = status if upstream_status is None else upstream_status
    if status in (401, 403):
        return UpstreamError(message, outcome=AUTH, status=status, **kw)
    if status == 429:
        return UpstreamError(message, outcome=QUOTA, status=429, **kw)
    if 400 <= status < 500 and status != 408:
        return UpstreamError(message, outcome=CLIENT, status=status, **kw)
    return UpstreamError(message, outcome=TRANSIENT, status=server_statuses.get(status, 502), **kw)


# ---------------------------------------------------------------------------------------------------
# embeddings


def encode_floats(values: list[float], encoding_format: str | None) -> list[float] | str:
    """``encoding_format="base64"`` (the openai SDK's default): little-endian float32, base64 encoded."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


# ---------------------------------------------------------------------------------------------------
# OpenAI response objects


def assistant_message(content: str | None, tool_calls: list[dict] | None = None) -> dict:
    """A ``ChatCompletionResponseMessage``; ``refusal`` is required by the schema (keyrelay never refuses)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion_choice(index: int, message: dict, finish_reason: str) -> dict:
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def completion(id_: str, created: int, model: str, choices: list[dict], usage: dict) -> dict:
    """A ``chat.completion`` object."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def chunk(
    id_: str, created: int, model: str, delta: dict, finish_reason: str | None = None, index: int = 0
) -> dict:
    """A ``chat.completion.chunk`` with one choice."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(id_: str, created: int, model: str, usage: dict) -> dict:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }


class StreamChunks:
    """The id, creation time and model every chunk of one stream shares; base of the stream translators."""

    def __init__(self, model: str, id_: str | None = None) -> None:
        self.model = model
        self.id = id_ or completion_id()
        self.created = int(time.time())

    def make_chunk(self, delta: dict, finish_reason: str | None = None, index: int = 0) -> dict:
        return chunk(self.id, self.created, self.model, delta, finish_reason, index)

    def make_usage_chunk(self, usage: dict) -> dict:
        return usage_chunk(self.id, self.created, self.model, usage)
