"""Gemini's own API for Gemini clients (google-genai SDK, Gemini CLI): ``/v1beta/models...``.

``POST /v1beta/models/{model}:generateContent | :streamGenerateContent (?alt=sse, else the JSON-array
stream) | :countTokens | :embedContent | :batchEmbedContents``, ``GET /v1beta/models`` and
``GET /v1beta/models/{model}``. The client key (a keyrelay client key, never forwarded) may come as
``x-goog-api-key``, ``?key=`` or ``Authorization: Bearer`` (``common.authenticate``). ``{model}`` is
resolved like any model name (aliases, ``provider/model``).

To a Gemini upstream the client's body goes as it is (the model names inside retargeted), through the
relay's keys, cooldowns, failover and accounting, and the answer comes back as the upstream sent it
(streams event by event, usage read from ``usageMetadata``). To any other upstream it is translated
through the internal chat shape (``gemini_shape``), with a 400 for what cannot be translated. Errors are
in Gemini's envelope (``envelopes.py`` → ``gemini_shape.error_body``).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, request

from proxy.api import gemini_shape as shape
from proxy.api import response_cache
from proxy.api.common import authenticate, close, gateway, read_json, routed, start_trace, stream_response
from proxy.api.openai import visible_models
from proxy.cache.replay import replay_gemini
from proxy.errors import CLIENT, BadRequest, GatewayError, ModelNotFound, UpstreamError
from proxy.providers.anthropic import to_anthropic_request
from proxy.providers.base import Adapter, Call, native_anthropic

bp = Blueprint("gemini", __name__, url_prefix="/v1beta")
bp.before_request(authenticate)
bp.after_request(response_cache.add_headers)

NATIVE = "gemini"  # stream items tagged NATIVE are an upstream event's JSON text


def native_gemini(adapter: object) -> Any:
    """The adapter when its upstream speaks Gemini's API itself (``GeminiAdapter.native``), else None."""
    return adapter if getattr(adapter, "speaks_gemini", False) is True else None


@bp.post("/models/<path:target>")
def call_model(target: str) -> Response:
    model, method = shape.split_target(target)
    body = read_json()
    if method in ("generateContent", "streamGenerateContent"):
        shape.validate_generate(body)
        return _generate(model, body, stream=method == "streamGenerateContent")
    if method == "countTokens":
        shape.validate_count(body)
        return _count(model, body)
    if method == "embedContent":
        shape.validate_embed(body)
    else:
        shape.validate_batch(body)
    return _embed(model, method, body)


def _chat_request(body: dict, model: str, stream: bool) -> tuple[dict, BadRequest | None]:
    """The chat request for ``body`` (what other upstreams get, what admission sizes), or a same-sized
    stand-in and the reason the body cannot be translated (refused only if the target is not Gemini)."""
    try:
        return shape.to_chat_request(body, model, stream=stream), None
    except BadRequest as exc:
        return shape.estimate_request(body, model), exc


def _refuse(exc: GatewayError) -> UpstreamError:
    return UpstreamError(exc.message, outcome=CLIENT, status=400, code=exc.code)


def _generate(model: str, body: dict, *, stream: bool) -> Response:
    req, untranslatable = _chat_request(body, model, stream)
    trace = start_trace(model, req)
    # one entry for both methods: the stored answer is generateContent's, a stream replays it
    cached = response_cache.begin(body, f"/v1beta/models/{model}:generateContent")
    relay = gateway().relay
    if stream:
        def open_stream(adapter: Adapter, call: Call, r: dict) -> Iterator[tuple[str | None, Any]]:
            if (native := native_gemini(adapter)) is not None:
                return _tagged(NATIVE, native.native_stream(call, body))
            if untranslatable is not None:
                raise _refuse(untranslatable)
            return _tagged(None, adapter.chat_stream(call, r))

        events = iter([orjson.dumps(e) for e in replay_gemini(cached.answer)]) if cached.hit else \
            cached.keep_gemini(_events(relay.stream(req, trace, open_stream), model))
        if request.args.get("alt") == "sse":
            return stream_response(_sse(events), trace)
        resp = stream_response(_json_array(events), trace)
        resp.mimetype = "application/json"
        return resp

    def complete(adapter: Adapter, call: Call, r: dict) -> tuple[dict, dict]:
        if (native := native_gemini(adapter)) is not None:
            return native.native(call, "generateContent", body)
        if untranslatable is not None:
            raise _refuse(untranslatable)
        completion = adapter.chat(call, r)
        return shape.from_completion(completion, model), {"usage": completion.get("usage")}

    if cached.hit:
        return response_cache.hit(cached)
    return routed(cached.keep(relay.complete(req, trace, complete)[0]), trace)


def _count(model: str, body: dict) -> Response:
    """Counted by the upstream itself, so only for models served by a Gemini or an Anthropic upstream
    (Messages ``count_tokens``): any other count would be a guess."""
    inner = body.get("generateContentRequest") or body
    req, untranslatable = _chat_request(inner, model, False)
    req["max_tokens"] = 1  # admission: a count produces nothing
    trace = start_trace(model, req)

    def count(adapter: Adapter, call: Call, r: dict) -> tuple[dict, dict]:
        if (native := native_gemini(adapter)) is not None:
            upstream_body = shape.retarget("countTokens", body, call.model)
            return native.native(call, "countTokens", upstream_body)[0], {}  # a count uses no tokens
        if (anthropic := native_anthropic(adapter)) is not None:
            if untranslatable is not None:
                raise _refuse(untranslatable)
            messages = to_anthropic_request(r, call.model)
            messages.pop("max_tokens", None)  # count_tokens takes the Messages body without it
            counted = anthropic.count_tokens(call, messages)
            return {"totalTokens": int(counted.get("input_tokens") or 0)}, {}
        raise UpstreamError(f"countTokens is only available for models served by a Gemini or an Anthropic "
                            f"upstream; {model!r} is not", outcome=CLIENT, status=400)

    return routed(gateway().relay.complete(req, trace, count)[0], trace)


def _embed(model: str, method: str, body: dict) -> Response:
    try:
        req, untranslatable = shape.to_embeddings_request(method, body, model), None
    except BadRequest as exc:
        req, untranslatable = {"model": model, "input": ""}, exc
    trace = start_trace(model, req)

    def embed(adapter: Adapter, call: Call, r: dict) -> tuple[dict, dict]:
        if (native := native_gemini(adapter)) is not None:
            return native.native(call, method, shape.retarget(method, body, call.model))
        if untranslatable is not None:
            raise _refuse(untranslatable)
        result = adapter.embeddings(call, r)
        return shape.from_embeddings(method, result), {"usage": result.get("usage")}

    return routed(gateway().relay.complete(req, trace, embed)[0], trace)


def _tagged(tag: str | None, items: Iterator[Any]) -> Iterator[tuple[str | None, Any]]:
    """Tag each stream item; closing this closes ``items`` at once (and with it the upstream response)."""
    try:
        for item in items:
            yield tag, item
    finally:
        close(items)


def _events(items: Iterator[tuple[str | None, Any]], model: str) -> Iterator[bytes]:
    """Each event's JSON: a native one as the upstream sent it (one line: JSON text holds no raw newline
    outside whitespace), a translated one encoded here; a failure after the first byte is an error event."""
    encoder = shape.GeminiEvents(model)
    native = False
    try:
        for tag, item in items:
            if tag == NATIVE:
                native = True
                yield item[0].replace("\n", " ").encode()
            else:
                for event in encoder.feed(item):
                    yield orjson.dumps(event)
        if not native:
            for event in encoder.finish():
                yield orjson.dumps(event)
    except GatewayError as err:
        yield orjson.dumps(shape.error_body(err))
    finally:
        close(items)


def _sse(events: Iterator[bytes]) -> Iterator[bytes]:
    try:
        for event in events:
            yield b"data: " + event + b"\r\n\r\n"
    finally:
        close(events)


def _json_array(events: Iterator[bytes]) -> Iterator[bytes]:
    """The stream without ``alt=sse``: one JSON array, sent element by element."""
    first = True
    try:
        for event in events:
            yield (b"[" if first else b",\r\n") + event
            first = False
    finally:
        close(events)
    yield b"]" if not first else b"[]"


@bp.get("/models")
def list_models() -> Response:
    models = [shape.model_object(m["id"]) for m in visible_models()]
    return Response(orjson.dumps({"models": models}), mimetype="application/json")


@bp.get("/models/<path:name>")
def get_model(name: str) -> Response:
    for m in visible_models():
        if m["id"] == name:
            return Response(orjson.dumps(shape.model_object(name)), mimetype="application/json")
    raise ModelNotFound(f"models/{name} is not found for this gateway.", param="model")
