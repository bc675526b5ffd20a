"""The Anthropic-compatible endpoint: POST /v1/messages.

Requests are translated at the door into the internal OpenAI shape and routed like any other; answers
come back as an Anthropic message or Anthropic's stream event sequence. When the target is itself an
Anthropic upstream, the body is passed through unchanged (apart from the model name).
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Blueprint, Response

from proxy.api.anthropic_shape import (
    AnthropicStreamEncoder,
    anthropic_to_openai_request,
    openai_to_anthropic_response,
)
from proxy.api.openai import close, gateway, read_json, routed, start_trace, stream_response
from proxy.errors import GatewayError
from proxy.providers.anthropic import AnthropicAdapter, messages_passthrough, messages_passthrough_stream

bp = Blueprint("anthropic", __name__, url_prefix="/v1")

NATIVE = "anthropic"  # items tagged NATIVE are already in Anthropic's shape


def encode_event(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@bp.post("/messages")
def messages() -> Response:
    body = read_json()
    req = anthropic_to_openai_request(body)  # validates model, max_tokens, messages
    client_model = body["model"]
    trace = start_trace(client_model)
    relay = gateway().relay
    if body.get("stream"):
        def open_stream(adapter, call, r):  # noqa: ANN001, ANN202
            if isinstance(adapter, AnthropicAdapter):
                return ((NATIVE, item) for item in messages_passthrough_stream(call, body))
            return ((None, chunk) for chunk in adapter.chat_stream(call, r))

        return stream_response(anthropic_sse(relay.stream(req, trace, open_stream), client_model), trace)

    def complete(adapter, call, r):  # noqa: ANN001, ANN202
        if isinstance(adapter, AnthropicAdapter):
            return messages_passthrough(call, body)
        return openai_to_anthropic_response(adapter.chat(call, r), client_model)

    return routed(relay.complete(req, trace, complete), trace)


def anthropic_sse(items: Iterator[tuple[str | None, object]], model: str) -> Iterator[bytes]:
    """Encode tagged stream items as Anthropic SSE; a failure after the first byte becomes an error event."""
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
