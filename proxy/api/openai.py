"""The OpenAI-compatible data plane: /v1/chat/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from flask import Blueprint, Response, g, jsonify

from proxy.api.common import authenticate, close, gateway, read_json, routed, start_trace, stream_response
from proxy.api.shapes import validate_chat, validate_embeddings
from proxy.errors import GatewayError, ModelNotFound
from proxy.providers.toolkit import encode_floats

bp = Blueprint("proxy", __name__, url_prefix="/v1")
bp.before_request(authenticate)


def sse(chunks: Iterator[dict], include_usage: bool = True) -> Iterator[bytes]:
    """Encode OpenAI chunks as SSE; a failure after the first byte becomes an error event, then [DONE].
    Without ``include_usage`` the usage-only chunk (asked for by the gateway, for metrics) is dropped."""
    try:
        for chunk in chunks:
            if not include_usage and not chunk.get("choices") and "usage" in chunk:
                continue
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as err:
        yield b"data: " + orjson.dumps(err.openai_body()) + b"\n\n"
    finally:
        close(chunks)
    yield b"data: [DONE]\n\n"


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = read_json()
    validate_chat(body)
    trace = start_trace(body["model"], body)
    relay = gateway().relay
    if body.get("stream"):
        options: dict = body.get("stream_options") or {}  # validated: an object or absent
        wanted = bool(options.get("include_usage"))
        body["stream_options"] = {**options, "include_usage": True}  # usage feeds the token metrics
        return stream_response(sse(relay.chat_stream(body, trace), wanted), trace)
    return routed(relay.chat(body, trace), trace)


@bp.post("/embeddings")
def embeddings() -> Response:
    body = read_json()
    validate_embeddings(body)
    trace = start_trace(body["model"], body)
    result = gateway().relay.embeddings(body, trace)
    for item in result.get("data", []):  # base64 is what the openai SDK asks for by default
        if isinstance(item.get("embedding"), list):
            item["embedding"] = encode_floats(item["embedding"], body.get("encoding_format"))
    return routed(result, trace)


def visible_models() -> list[dict]:
    """The models this gateway serves that the calling client may use."""
    gw, client = gateway(), g.get("client")
    return [{**m, **gw.catalog.model_fields(m["id"])} for m in gw.relay.models()
            if gw.clients.auth.allowed(client, m["id"])]


@bp.get("/models")
def list_models() -> Response:
    return jsonify({"object": "list", "data": visible_models()})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    for model in visible_models():
        if model["id"] == model_id:
            return jsonify(model)
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
