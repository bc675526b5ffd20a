"""Pure translation for the client-facing Anthropic endpoint (POST /v1/messages).

The gateway speaks the OpenAI Chat Completions shape inside; an Anthropic client's request is translated
here at the door, and the internal answer (a ``chat.completion`` or a stream of chunks) is translated back
into an Anthropic message or a legal sequence of Anthropic stream events. No I/O here.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from proxy.errors import BadRequest, GatewayError

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_DROPPED_BLOCKS = ("thinking", "redacted_thinking")  # cannot be replayed to non-Anthropic upstreams


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# ---------------------------------------------------------------- request: Anthropic client -> OpenAI


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = []
        for block in system:
            if not isinstance(block, dict) or block.get("type") != "text":
                raise BadRequest("system: only text blocks are supported", param="system")
            texts.append(str(block.get("text", "")))
        return "\n\n".join(t for t in texts if t)
    raise BadRequest("system: must be a string or a list of text blocks", param="system")


def _image_part(block: dict, where: str) -> dict:
    source = block.get("source") or {}
    if source.get("type") == "base64" and source.get("data"):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    elif source.get("type") == "url" and source.get("url"):
        url = source["url"]
    else:
        raise BadRequest(f"{where}: image source must be base64 or url", param=where)
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(block: dict, where: str) -> str:
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        parts = []
        for inner in content:
            if not isinstance(inner, dict) or inner.get("type") != "text":
                raise BadRequest(f"{where}: only text content is supported inside tool_result", param=where)
            parts.append(str(inner.get("text", "")))
        text = "\n".join(parts)
    else:
        raise BadRequest(f"{where}: content must be a string or a list of blocks", param=where)
    # OpenAI tool messages have no error flag; say it in the text so the model still knows.
    return f"Error: {text}" if block.get("is_error") else text


def _user_messages(content: Any, where: str) -> list[dict]:
    """One Anthropic user turn -> OpenAI tool messages (first) and at most one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict] = []
    parts: list[dict] = []
    for i, block in enumerate(content):
        here = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block, here))
        elif kind == "tool_result":
            tools.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                          "content": _tool_result_text(block, here)})
        elif kind in _DROPPED_BLOCKS:
            continue
        else:
            raise BadRequest(f"{here}: block type {kind!r} is not supported", param=here)
    out = list(tools)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user",
                    "content": "".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts})
    return out


def _assistant_message(content: Any, where: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict] = []
    for i, block in enumerate(content):
        here = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or _new_id("toolu_")), "type": "function",
                          "function": {"name": str(block.get("name", "")),
                                       "arguments": json.dumps(block.get("input") or {})}})
        elif kind in _DROPPED_BLOCKS:
            continue
        else:
            raise BadRequest(f"{here}: block type {kind!r} is not supported in assistant turns", param=here)
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise BadRequest("tools: must be a list", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not tool.get("name") or tool.get("type", "custom") != "custom":
            raise BadRequest(f"tools[{i}]: only custom tools with a name and input_schema are supported",
                             param=f"tools[{i}]")
        fn: dict[str, Any] = {"name": tool["name"],
                              "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, req: dict) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        req["tool_choice"] = "auto"
    elif kind == "any":
        req["tool_choice"] = "required"
    elif kind == "none":
        req["tool_choice"] = "none"
    elif kind == "tool" and choice.get("name"):
        req["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequest("tool_choice: type must be auto, any, none or tool (with a name)",
                         param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        req["parallel_tool_calls"] = False


def anthropic_to_openai_request(body: dict) -> dict:
    """Validate an Anthropic Messages request and translate it into the internal OpenAI request.

    Dropped on purpose: ``top_k`` (no OpenAI equivalent), ``metadata``, ``thinking`` and thinking blocks
    in history (they only mean something to Anthropic upstreams; use the pass-through for those).
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required (a non-empty string)", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens: field required (an integer >= 1)", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: field required (a non-empty list)", param="messages")

    out_messages: list[dict] = []
    if body.get("system"):
        text = _system_text(body["system"])
        if text:
            out_messages.append({"role": "system", "content": text})
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: must be 'user' or 'assistant'", param=f"{where}.role")
        content = msg.get("content")
        if not isinstance(content, (str, list)):
            raise BadRequest(f"{where}.content: must be a string or a list of blocks",
                             param=f"{where}.content")
        if msg["role"] == "user":
            out_messages += _user_messages(content, where)
        else:
            out_messages.append(_assistant_message(content, where))

    req: dict[str, Any] = {"model": model, "messages": out_messages, "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            req[key] = body[key]
    if body.get("stop_sequences"):
        req["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        req["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], req)
    if body.get("stream"):
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}  # the encoder needs usage for message_delta
    return req


# ---------------------------------------------------------------- response: OpenAI -> Anthropic client


def stop_reason(finish: str | None) -> str:
    return _STOP_REASONS.get(finish or "", "end_turn")


def _tool_input(arguments: Any) -> dict:
    """Arguments string -> input object. Non-object JSON (a model's mistake) is kept under ``_raw``."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _usage(usage: dict | None) -> dict:
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    out = {"input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached),
           "output_tokens": usage.get("completion_tokens") or 0}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def openai_to_anthropic_response(resp: dict, model: str) -> dict:
    """Translate an internal ``chat.completion`` into an Anthropic message for the client."""
    choices = resp.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content: list[dict] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _new_id("toolu_"),
                        "name": fn.get("name", ""), "input": _tool_input(fn.get("arguments"))})
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choices[0].get("finish_reason")),
        "stop_sequence": None,
        "usage": _usage(resp.get("usage")),
    }


# ------------------------------------------------------------ streaming: OpenAI chunks -> Anthropic events


class AnthropicStreamEncoder:
    """Turn internal ``chat.completion.chunk`` dicts into Anthropic stream events, in legal order:
    message_start, (content_block_start, content_block_delta*, content_block_stop)*, message_delta,
    message_stop. Call ``feed`` per chunk and ``finish`` once at the end (safe to call twice)."""

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = _new_id("msg_")
        self._input_tokens = input_tokens
        self._output_tokens = 0
        self._usage_seen = False
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open: int | None = None  # index of the open block
        self._open_kind: str | None = None
        self._tools: dict[int, int] = {}  # OpenAI tool_call index -> block index
        self._stop_reason: str | None = None

    def _start(self) -> list[tuple[str, dict]]:
        if self._started:
            return []
        self._started = True
        return [("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0}}})]

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open_block(self, kind: str, block: dict) -> tuple[list[tuple[str, dict]], int]:
        events = self._close()
        index = self._next_index
        self._next_index += 1
        self._open, self._open_kind = index, kind
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": block}))
        return events, index

    def _take_usage(self, usage: dict) -> None:
        self._usage_seen = True
        converted = _usage(usage)
        self._input_tokens = converted["input_tokens"]
        self._output_tokens = converted["output_tokens"]

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        if self._finished:
            return []
        events = self._start()
        if chunk.get("usage"):
            self._take_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open_kind != "text":
                    opened, _ = self._open_block("text", {"type": "text", "text": ""})
                    events += opened
                events.append(("content_block_delta", {"type": "content_block_delta", "index": self._open,
                                                       "delta": {"type": "text_delta", "text": text}}))
            for call in delta.get("tool_calls") or []:
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop_reason = stop_reason(choice["finish_reason"])
        return events

    def _tool_delta(self, call: dict) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        fn = call.get("function") or {}
        key = call.get("index", len(self._tools))
        if key not in self._tools:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or _new_id("toolu_"),
                     "name": fn.get("name") or "", "input": {}}
            events, self._tools[key] = self._open_block("tool_use", block)
        arguments = fn.get("arguments")
        if arguments:
            # OpenAI-compatible upstreams stream one call after another; if one ever interleaved, its
            # fragment still goes to the right block index (the SDK accumulates by index).
            events.append(("content_block_delta", {"type": "content_block_delta", "index": self._tools[key],
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": arguments}}))
        return events

    def finish(self) -> list[tuple[str, dict]]:
        """Close the open block and end the message, even if no finish_reason arrived."""
        if self._finished:
            return []
        events = self._start() + self._close()
        self._finished = True
        usage: dict[str, int] = {"output_tokens": self._output_tokens}
        if self._usage_seen:
            usage["input_tokens"] = self._input_tokens
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": self._stop_reason or "end_turn",
                                                   "stop_sequence": None},
                                         "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    @staticmethod
    def error_event(err: BaseException) -> tuple[str, dict]:
        """An ``error`` event for a failure after the stream started (message never contains a key)."""
        if isinstance(err, GatewayError):
            body = err.anthropic_body()
            return "error", {"type": "error", "error": {"type": body["error"]["type"],
                                                        "message": body["error"]["message"]}}
        return "error", {"type": "error", "error": {"type": "api_error", "message": "internal error"}}
