"""The Anthropic-compatible endpoint: POST /v1/messages.

Requests are translated at the door into the internal OpenAI shape and routed like any other; answers
come back as an Anthropic message or Anthropic's stream event sequence. When the target is itself an
Anthropic upstream, the body is passed through unchanged (apart from the model name).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request

from proxy.api import response_cache
from proxy.api.anthropic_shape import (
    AnthropicStreamEncoder,
    anthropic_to_openai_request,
    openai_to_anthropic_response,
)
from proxy.api.common import authenticate, close, gateway, read_json, routed, start_trace, stream_response
from proxy.api.shapes import validate_messages
from proxy.cache.replay import replay_events
from proxy.errors import CLIENT, GatewayError, UpstreamError
from proxy.providers.anthropic import client_headers
from proxy.providers.base import Adapter, Call, native_anthropic

bp = Blueprint("anthropic", __name__, url_prefix="/v1")
bp.before_request(authenticate)
bp.after_request(response_cache.add_headers)

NATIVE = "anthropic"  # items tagged NATIVE are already in Anthropic's shape


def encode_event(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@bp.post("/messages")
def messages() -> Response:
    body = read_json()
    validate_messages(body)
    req = anthropic_to_openai_request(body)
    client_model = body["model"]
    trace = start_trace(client_model, req)
    cached = response_cache.begin(body)
    if cached.hit:
        if body.get("stream"):
            return stream_response(iter([encode_event(*e) for e in replay_events(cached.answer)]), trace)
        return response_cache.hit(cached)
    relay = gateway().relay
    forward = client_headers(request.headers)
    if body.get("stream"):
        def open_stream(adapter: Adapter, call: Call, r: dict) -> Iterator[tuple[str | None, Any]]:
            if (native := native_anthropic(adapter)) is not None:
                return _tagged(NATIVE, native.messages_stream(call, body, forward))
            return _tagged(None, adapter.chat_stream(call, r))

        frames = anthropic_sse(relay.stream(req, trace, open_stream), client_model)
        return stream_response(cached.keep_frames(frames), trace)

    def complete(adapter: Adapter, call: Call, r: dict) -> dict:
        if (native := native_anthropic(adapter)) is not None:
            return native.messages(call, body, forward)
        return openai_to_anthropic_response(adapter.chat(call, r), client_model)

    return routed(cached.keep(relay.complete(req, trace, complete)), trace)


@bp.post("/messages/count_tokens")
def count_tokens() -> Response:
    """Counted by the upstream itself, so only for models served by an Anthropic upstream: any other
    count would be a guess."""
    body = read_json()
    validate_messages(body, count_tokens=True)
    req = anthropic_to_openai_request({**body, "max_tokens": 1, "stream": False})
    trace = start_trace(body["model"], req)
    forward = client_headers(request.headers)

    def count(adapter: Adapter, call: Call, r: dict) -> dict:
        if (native := native_anthropic(adapter)) is None:
            raise UpstreamError(f"count_tokens is only available for models served by an Anthropic upstream; "
                                f"{body['model']!r} is not", outcome=CLIENT, status=400)
        return native.count_tokens(call, body, forward)

    return routed(gateway().relay.complete(req, trace, count), trace)


def _tagged(tag: str | None, items: Iterator[Any]) -> Iterator[tuple[str | None, Any]]:
    """Tag each stream item; closing this closes ``items`` at once (and with it the upstream response)."""
    try:
        for item in items:
            yield tag, item
    finally:
        close(items)


def anthropic_sse(items: Iterator[tuple[str | None, Any]], model: str) -> Iterator[bytes]:
    """Encode tagged stream items (NATIVE: an (event, data) pair; else an OpenAI chunk) as Anthropic
    SSE; a failure after the first byte becomes an error event."""
    encoder = AnthropicStreamEncoder(model)
    native = False
    try:
        for tag, item in items:
            if tag == NATIVE:
                native = True
                yield encode_event(*item)
            else:
                for event in encoder.feed(item):
                    yield encode_event(*event)
        if not native:
            for event in encoder.finish():
                yield encode_event(*event)
    except GatewayError as err:
        yield encode_event(*AnthropicStreamEncoder.error_event(err))
    finally:
        close(items)
