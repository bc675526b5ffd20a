"""Ollama native API upstream (/api/chat, /api/tags, /api/embed); no key needed.

Ollama streams NDJSON (one JSON object per line, the last one ``"done": true``), sends tool calls whole
with ``arguments`` as an object and without ids, and reports errors as ``{"error": "..."}``.
See docs/upstream-api-notes.md §6.1.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from proxy.errors import AUTH, CLIENT, TRANSIENT, UpstreamError
from proxy.providers import http
from proxy.providers.base import Call, loads_embedded

DEFAULT_BASE_URL = "http://127.0.0.1:11434"


def _client_error(message: str) -> UpstreamError:
    return UpstreamError(message, outcome=CLIENT, status=400)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# ---------------------------------------------------------------- request: OpenAI -> Ollama


def _split_content(content: Any) -> tuple[str, list[str]]:
    """OpenAI content -> (text, base64 images). Ollama takes inline images only."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise _client_error("message content must be a string or a list of parts")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            header, sep, data = str(url or "").partition(",")
            if not header.startswith("data:") or not header.endswith(";base64") or not sep:
                raise _client_error("Ollama accepts images only as base64 data URLs")
            images.append(data)
        else:
            raise _client_error(f"content part type {kind!r} is not supported by this model")
    return "\n".join(texts), images


def _tool_call(call: dict) -> dict:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args = loads_embedded(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise _client_error("tool call arguments are not valid JSON") from None
    return {"function": {"name": fn.get("name", ""), "arguments": args}}


def to_ollama_request(req: dict, model: str) -> dict:
    """Translate an OpenAI chat request into an /api/chat body (``stream`` is set by the caller)."""
    messages: list[dict] = []
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, for role "tool" messages
    for msg in req.get("messages") or []:
        role = msg.get("role")
        text, images = _split_content(msg.get("content"))
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise _client_error(f"message role {role!r} is not supported")
        out: dict[str, Any] = {"role": role, "content": text}
        if images:
            out["images"] = images
        if role == "assistant" and msg.get("tool_calls"):
            out["tool_calls"] = [_tool_call(c) for c in msg["tool_calls"]]
            for c in msg["tool_calls"]:
                tool_names[c.get("id", "")] = (c.get("function") or {}).get("name", "")
        if role == "tool" and msg.get("tool_call_id") in tool_names:
            out["tool_name"] = tool_names[msg["tool_call_id"]]
        messages.append(out)

    body: dict[str, Any] = {"model": model, "messages": messages}
    options: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        if req.get(src) is not None:
            options[dst] = req[src]
    max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
    if max_tokens:
        options["num_predict"] = max_tokens
    stop = req.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if options:
        body["options"] = options
    if req.get("tools"):
        body["tools"] = req["tools"]  # Ollama takes the OpenAI function-tool shape as is
    fmt = req.get("response_format") or {}
    if fmt.get("type") == "json_object":
        body["format"] = "json"
    elif fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        body["format"] = fmt["json_schema"].get("schema") or "json"
    return body


# ---------------------------------------------------------------- response: Ollama -> OpenAI


def _tool_calls(message: dict) -> list[dict]:
    out = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        out.append({"id": call.get("id") or _new_id("call_"), "type": "function",
                    "function": {"name": fn.get("name", ""),
                                 "arguments": args if isinstance(args, str) else json.dumps(args or {})}})
    return out


def _finish(done_reason: str | None, had_tools: bool) -> str:
    if had_tools:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def _usage(body: dict) -> dict:
    prompt = body.get("prompt_eval_count") or 0
    completion = body.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def from_ollama_response(body: dict, model: str) -> dict:
    """Translate a non-streamed /api/chat answer into a ``chat.completion`` (thinking is not shown)."""
    message = body.get("message") or {}
    tool_calls = _tool_calls(message)
    content = message.get("content") or ("" if not tool_calls else None)
    out: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": out, "logprobs": None,
                     "finish_reason": _finish(body.get("done_reason"), bool(tool_calls))}],
        "usage": _usage(body),
    }


class OllamaStreamTranslator:
    """Feed decoded NDJSON objects; get back OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = _new_id("chatcmpl-")
        self.created = int(time.time())
        self.done = False
        self._started = False
        self._tools = 0

    def _chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def feed(self, obj: dict) -> list[dict]:
        if obj.get("error"):
            raise UpstreamError(f"ollama stream error: {obj['error']}", outcome=TRANSIENT, status=502)
        out: list[dict] = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        message = obj.get("message") or {}
        if message.get("content"):
            out.append(self._chunk({"content": message["content"]}))
        for call in _tool_calls(message):
            out.append(self._chunk({"tool_calls": [{"index": self._tools, **call}]}))
            self._tools += 1
        if obj.get("done"):
            self.done = True
            out.append(self._chunk({}, _finish(obj.get("done_reason"), self._tools > 0)))
            if self.include_usage:
                out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": _usage(obj)})
        return out


# ---------------------------------------------------------------- errors


def classify_error(status: int, body: bytes | str | dict | None) -> UpstreamError:
    """UpstreamError for an Ollama error answer (``{"error": "..."}``)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body or b"{}")
        except ValueError:
            body = None
    text = str(body.get("error") or "") if isinstance(body, dict) else ""
    message = f"ollama {status}" + (f": {text}" if text else "")
    if status in (401, 403):  # only from a proxy in front of Ollama
        return UpstreamError(message, outcome=AUTH, status=status, upstream_status=status)
    if 400 <= status < 500 and status not in (408, 429):
        return UpstreamError(message, outcome=CLIENT, status=status, upstream_status=status)
    client_status = status if status in (503, 504) else 502
    return UpstreamError(message, outcome=TRANSIENT, status=client_status, upstream_status=status)


# ---------------------------------------------------------------- I/O


def _base(call: Call) -> str:
    return (call.base_url or DEFAULT_BASE_URL).rstrip("/")


def _call(call: Call, method: str, path: str, body: dict | None = None) -> dict:
    status, _, data = http.request(method, _base(call) + path, headers=dict(call.headers), body=body,
                                   timeouts=call.timeouts)
    if status >= 400:
        raise classify_error(status, data)
    return http.json_object(data, "ollama")


class OllamaAdapter:
    """Adapter for a local or remote Ollama server (call.key is ignored)."""

    name = "ollama"

    def chat(self, call: Call, req: dict) -> dict:
        body = {**to_ollama_request(req, call.model), "stream": False}
        return from_ollama_response(_call(call, "POST", "/api/chat", body), req.get("model") or call.model)

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]:
        body = {**to_ollama_request(req, call.model), "stream": True}
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        translator = OllamaStreamTranslator(req.get("model") or call.model, include_usage)
        resp = http.open_request("POST", _base(call) + "/api/chat", headers=dict(call.headers), body=body,
                                 timeouts=call.timeouts)
        try:
            if resp.status >= 400:
                try:
                    data = resp.read_all()
                except Exception:  # the status alone still classifies the error
                    data = b""
                raise classify_error(resp.status, data)
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise UpstreamError("ollama sent an invalid stream line", outcome=TRANSIENT,
                                        status=502) from None
                yield from translator.feed(obj)
                if translator.done:
                    return
            raise UpstreamError("ollama stream ended before done", outcome=TRANSIENT, status=502)
        finally:
            resp.close()

    def embeddings(self, call: Call, req: dict) -> dict:
        inputs = req.get("input")
        if not isinstance(inputs, (str, list)) or not inputs:
            raise _client_error("input must be a non-empty string or list of strings")
        resp = _call(call, "POST", "/api/embed", {"model": call.model, "input": inputs})
        tokens = resp.get("prompt_eval_count") or 0
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": vec, "index": i}
                     for i, vec in enumerate(resp.get("embeddings") or [])],
            "model": req.get("model") or call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def list_models(self, call: Call) -> list[str]:
        tags = _call(call, "GET", "/api/tags")
        return [m["name"] for m in tags.get("models") or [] if isinstance(m, dict) and m.get("name")]

    def probe(self, call: Call) -> None:
        _call(call, "GET", "/api/tags")
