"""Anthropic Messages API upstream: OpenAI-shaped requests in, OpenAI-shaped answers out.

Pure translation (``to_anthropic_request``, ``from_anthropic_response``, ``AnthropicStreamTranslator``,
``classify_error``) is separate from the I/O in ``AnthropicAdapter``. The module also offers a faithful
pass-through (``messages_passthrough*``) for Anthropic-speaking clients routed to an Anthropic upstream,
where translating through the OpenAI shape would lose information (thinking blocks, cache control...).
See docs/upstream-api-notes.md §5 and §7.
"""
from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator, Mapping
from typing import Any

from proxy.errors import CLIENT, QUOTA, TRANSIENT, UpstreamError
from proxy.providers import http
from proxy.providers import toolkit as tk
from proxy.providers.base import Call

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often omit it.
PASSTHROUGH_HEADERS = ("anthropic-beta",)

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _client_error(message: str) -> UpstreamError:
    return UpstreamError(message, outcome=CLIENT, status=400)


# ---------------------------------------------------------------- request: OpenAI -> Anthropic


def _text_of(content: Any) -> str:
    """Plain text of an OpenAI content value (string or list of text parts)."""
    try:
        return tk.text_of(content)
    except ValueError as err:
        raise _client_error(str(err)) from None


def _image_block(part: dict) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _client_error("image_url part without a url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise _client_error("image data URLs must be base64 encoded (data:<type>;base64,...)")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _client_error("message content must be a string or a list of parts")
    blocks: list[dict] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise _client_error(f"content part type {kind!r} is not supported by this model")
    return blocks


def _tool_use_block(call: dict) -> dict:
    fn = call.get("function") or {}
    try:
        args = tk.tool_arguments(call)
    except ValueError:
        raise _client_error("tool call arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise _client_error("tool call arguments must be a JSON object")
    return {"type": "tool_use", "id": call.get("id") or tk.new_id("toolu_"), "name": fn.get("name", ""),
            "input": args}


def _tool_result_block(msg: dict) -> dict:
    content = msg.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id", "")}
    if isinstance(content, list):
        block["content"] = _content_blocks(content)
    else:
        block["content"] = _text_of(content)
    return block


def _tool_choice(choice: Any, parallel: Any) -> dict | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        raise _client_error("unsupported tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_anthropic_request(req: dict, model: str) -> dict:
    """Translate an OpenAI chat request into a Messages API body (without ``stream``)."""
    system: list[str] = []
    turns: list[dict] = []
    for msg in req.get("messages") or []:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            turn = {"role": "user", "content": _content_blocks(msg.get("content"))}
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"))
            blocks += [_tool_use_block(c) for c in msg.get("tool_calls") or []]
            turn = {"role": "assistant", "content": blocks}
        elif role == "tool":
            turn = {"role": "user", "content": [_tool_result_block(msg)]}
        else:
            raise _client_error(f"message role {role!r} is not supported")
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["content"].extend(turn["content"])  # Anthropic expects alternating turns
        else:
            turns.append(turn)

    body: dict[str, Any] = {
        "model": model,
        "max_tokens": req.get("max_completion_tokens") or req.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p"):
        if req.get(key) is not None:
            body[key] = req[key]
    stop = req.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = req.get("tools")
    if tools:
        body["tools"] = [_tool_def(t) for t in tools]
        choice = _tool_choice(req.get("tool_choice"), req.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(req.get("user"), str):
        body["metadata"] = {"user_id": req["user"]}
    return body


def _tool_def(tool: dict) -> dict:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise _client_error("only function tools are supported")
    fn = tool["function"]
    out: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


# ---------------------------------------------------------------- response: Anthropic -> OpenAI


def _usage(u: dict) -> dict:
    """OpenAI usage from Anthropic usage. Anthropic input_tokens excludes cache reads/writes, while
    OpenAI prompt_tokens includes cached tokens, so both cache counts are added to prompt_tokens."""
    cache_read = u.get("cache_read_input_tokens") or 0
    cache_write = u.get("cache_creation_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + cache_read + cache_write
    completion = u.get("output_tokens") or 0
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cache_read or cache_write:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def from_anthropic_response(body: dict, model: str) -> dict:
    """Translate a Messages API response into a ``chat.completion`` (thinking blocks are dropped)."""
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in body.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append({
                "id": block.get("id") or tk.tool_call_id(),
                "type": "function",
                "function": {"name": block.get("name", ""),
                             "arguments": json.dumps(block.get("input") or {})},
            })
    text = "".join(texts)
    message = tk.assistant_message(text if text or not tool_calls else None, tool_calls)
    choice = tk.completion_choice(0, message, finish_reason(body.get("stop_reason")))
    return tk.completion(body.get("id") or tk.completion_id(), int(time.time()), model, [choice],
                         _usage(body.get("usage") or {}))


# ---------------------------------------------------------------- streaming: Anthropic SSE -> OpenAI chunks


def stream_error(error: dict) -> UpstreamError:
    """UpstreamError for an ``error`` event received after HTTP 200."""
    kind = error.get("type", "api_error")
    message = f"anthropic stream error: {kind}: {error.get('message', '')}"
    if kind == "rate_limit_error":
        return UpstreamError(message, outcome=QUOTA, status=429, code=kind)
    status = 503 if kind == "overloaded_error" else 502
    return UpstreamError(message, outcome=TRANSIENT, status=status, code=kind)


class AnthropicStreamTranslator(tk.StreamChunks):
    """Feed Anthropic stream events one by one; get back OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        super().__init__(model)
        self.include_usage = include_usage
        self.done = False
        self._usage: dict = {}
        self._stop_reason: str | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_call index

    def feed(self, event: str, data: dict) -> list[dict]:
        if event == "message_start":
            message = data.get("message") or {}
            self.id = message.get("id") or self.id
            self._usage.update(message.get("usage") or {})
            return [self.make_chunk({"role": "assistant", "content": ""})]
        if event == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return [self.make_chunk({"content": block["text"]})]
            if block.get("type") == "tool_use":
                index = self._tools[data.get("index", 0)] = len(self._tools)
                args = json.dumps(block["input"]) if block.get("input") else ""
                return [self.make_chunk({"tool_calls": [{
                    "index": index, "id": block.get("id") or tk.tool_call_id(), "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": args}}]})]
            return []  # thinking, redacted_thinking, server tools: not shown to OpenAI clients
        if event == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self.make_chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(data.get("index", 0))
                if tool is not None:
                    return [self.make_chunk({"tool_calls": [
                        {"index": tool, "function": {"arguments": delta["partial_json"]}}]})]
            return []
        if event == "message_delta":
            self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
            # message_delta usage is cumulative; it may repeat input_tokens.
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            return []
        if event == "message_stop":
            self.done = True
            out = [self.make_chunk({}, finish_reason(self._stop_reason))]
            if self.include_usage:
                out.append(self.make_usage_chunk(_usage(self._usage)))
            return out
        if event == "error":
            raise stream_error(data.get("error") or {})
        return []  # ping, content_block_stop and unknown future events


# ---------------------------------------------------------------- errors


_SERVER_STATUSES = {408: 504, 503: 503, 504: 504, 529: 503}


def classify_error(status: int, body: bytes | str | dict | None, headers: Any = None, *,
                   secret: str | None = None) -> UpstreamError:
    """UpstreamError for an Anthropic error response. ``secret`` (the key) is scrubbed from the message."""
    err: dict = {}
    body = tk.json_body(body or b"{}")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
    kind = str(err.get("type") or f"http_{status}")
    text = str(err.get("message") or "")
    if secret:
        text = text.replace(secret, "***")
    message = f"anthropic {status} {kind}" + (f": {text}" if text else "")
    if status == 402 or (status == 400 and "credit balance" in text.lower()):
        # The account behind this key cannot pay: a key-specific, long-lasting quota problem.
        return tk.status_error(429, message, upstream_status=status, daily=True, code=kind)
    retry = http.parse_retry_after(tk.header(headers, "retry-after")) if status == 429 else None
    return tk.status_error(status, message, server_statuses=_SERVER_STATUSES, retry_after=retry, code=kind)


# ---------------------------------------------------------------- I/O


def _headers(call: Call, client: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION, **call.headers}
    for name, value in (client or {}).items():  # a configured value (any case) and the client's merge
        configured = next((k for k in headers if k.lower() == name), None)
        mine = headers.pop(configured) if configured else None
        headers[name] = f"{mine},{value}" if mine else value
    if call.key:
        headers["x-api-key"] = call.key
    return headers


def client_headers(headers: tk.HeaderLookup) -> dict[str, str]:
    """Headers of an Anthropic client (a case-insensitive mapping, e.g. Flask's ``request.headers``) that a
    pass-through forwards: ``anthropic-beta`` turns on features the body may use (without it the upstream
    rejects those fields). Merged with a configured value of the same header."""
    return {name: value for name in PASSTHROUGH_HEADERS if (value := headers.get(name))}


def _base(call: Call) -> str:
    return call.base_url.rstrip("/")


def _post(call: Call, path: str, body: dict, client: Mapping[str, str] | None = None) -> dict:
    status, headers, data = http.request("POST", _base(call) + path, headers=_headers(call, client),
                                         body=body, timeouts=call.timeouts, transport=call.transport)
    if status >= 400:
        raise classify_error(status, data, headers, secret=call.key)
    return http.json_object(data, "anthropic")


def _sse_events(call: Call, body: dict, client: Mapping[str, str] | None = None
                ) -> Generator[tuple[str, dict], None, None]:
    """POST a streaming request; yield (event, data) until the connection closes. Errors before the first
    event raise from the first ``next()``; the response is closed when the generator is closed."""
    resp = http.open_request("POST", _base(call) + "/messages", headers=_headers(call, client), body=body,
                             timeouts=call.timeouts, transport=call.transport)
    try:
        if resp.status >= 400:
            raise classify_error(resp.status, http.read_error_body(resp), resp.headers, secret=call.key)
        for event, raw in http.iter_sse_data(resp.iter_lines()):
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise UpstreamError("anthropic sent an invalid stream event", outcome=TRANSIENT, status=502)
            yield event or data.get("type", ""), data
    finally:
        resp.close()


def _truncated() -> UpstreamError:
    return UpstreamError("anthropic stream ended before message_stop", outcome=TRANSIENT, status=502)


def messages_passthrough(call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict:
    """Anthropic client -> Anthropic upstream, unchanged except the model name (upstream id out, the
    client's name back in the response). ``client``: headers from ``client_headers``."""
    client_model = body.get("model")
    upstream = {**body, "model": call.model}
    upstream.pop("stream", None)
    resp = _post(call, "/messages", upstream, client)
    if client_model:
        resp["model"] = client_model
    return resp


def messages_count_tokens(call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict:
    """POST /messages/count_tokens with the client's body (model renamed): ``{"input_tokens": N}``."""
    return _post(call, "/messages/count_tokens", {**body, "model": call.model}, client)


def messages_passthrough_stream(call: Call, body: dict, client: Mapping[str, str] | None = None
                                ) -> Iterator[tuple[str, dict]]:
    """Streaming pass-through: yields (event_name, data) as received (model renamed in message_start).
    An ``error`` event raises UpstreamError (the endpoint re-emits it in the client's dialect)."""
    client_model = body.get("model")
    upstream = {**body, "model": call.model, "stream": True}
    events = _sse_events(call, upstream, client)
    try:
        for event, data in events:
            if event == "error":
                raise stream_error(data.get("error") or {})
            if event == "message_start" and client_model and isinstance(data.get("message"), dict):
                data["message"]["model"] = client_model
            yield event, data
            if event == "message_stop":
                return
        raise _truncated()
    finally:
        events.close()


class AnthropicAdapter:
    """Adapter for the Anthropic Messages API (see proxy/providers/base.py for the contract).

    It speaks Anthropic Messages natively (``base.AnthropicNative``): the /v1/messages endpoint passes an
    Anthropic client's body through it instead of translating it twice."""

    name = "anthropic"
    speaks_anthropic = True

    def messages(self, call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict:
        return messages_passthrough(call, body, client)

    def messages_stream(self, call: Call, body: dict, client: Mapping[str, str] | None = None
                        ) -> Iterator[tuple[str, dict]]:
        return messages_passthrough_stream(call, body, client)

    def count_tokens(self, call: Call, body: dict, client: Mapping[str, str] | None = None) -> dict:
        return messages_count_tokens(call, body, client)

    def chat(self, call: Call, req: dict) -> dict:
        resp = _post(call, "/messages", to_anthropic_request(req, call.model))
        return from_anthropic_response(resp, req.get("model") or call.model)

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]:
        body = {**to_anthropic_request(req, call.model), "stream": True}
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        translator = AnthropicStreamTranslator(req.get("model") or call.model, include_usage)
        events = _sse_events(call, body)
        try:
            for event, data in events:
                yield from translator.feed(event, data)
                if translator.done:
                    return
            raise _truncated()
        finally:
            events.close()

    def embeddings(self, call: Call, req: dict) -> dict:
        raise UpstreamError("embeddings are not supported by the Anthropic API", outcome=CLIENT, status=400)

    def probe(self, call: Call) -> None:
        status, headers, data = http.request("GET", _base(call) + "/models?limit=1", headers=_headers(call),
                                             timeouts=call.timeouts, transport=call.transport)
        if status >= 400:
            raise classify_error(status, data, headers, secret=call.key)
