"""A stored answer ⇄ a stream, in each dialect (pure functions on plain data).

* OpenAI: ``assemble_chunks`` folds a ``chat.completion.chunk`` stream into the ``chat.completion`` it
  stands for (None when it is incomplete: a choice without ``finish_reason``); ``replay_chunks`` turns a
  completion back into a valid chunk stream (role and text, each tool call whole, the finish reason, the
  usage-only chunk).
* Anthropic: ``assemble_events`` folds the message events into the message (None without
  ``message_stop``, or after an ``error`` event); ``replay_events`` gives the legal event order back:
  message_start, per block content_block_start / _delta / _stop, message_delta, message_stop.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")  # deltas that concatenate


# ---------------------------------------------------------------------------------------------- OpenAI


def assemble_chunks(chunks: Iterable[dict]) -> dict | None:
    head: dict[str, Any] = {}
    choices: dict[int, dict] = {}
    calls: dict[int, dict[int, dict]] = {}
    usage = None
    for chunk in chunks:
        if not head:
            head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices") or []:
            i = int(c.get("index", 0))
            choice = choices.setdefault(i, {"index": i, "message": {}, "logprobs": None,
                                            "finish_reason": None})
            message = choice["message"]
            for k, v in (c.get("delta") or {}).items():
                if k == "tool_calls":
                    for call in v or []:
                        _fold_call(calls.setdefault(i, {}), call)
                elif k in _TEXT_FIELDS and isinstance(v, str):
                    message[k] = (message.get(k) or "") + v
                elif v is not None or k not in message:
                    message[k] = v
            if c.get("logprobs"):
                have = choice["logprobs"] or {}
                for k, v in c["logprobs"].items():
                    have[k] = (have.get(k) or []) + v if isinstance(v, list) else v
                choice["logprobs"] = have
            if c.get("finish_reason"):
                choice["finish_reason"] = c["finish_reason"]
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    for i, choice in choices.items():
        message = choice["message"]
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        if calls.get(i):
            message["tool_calls"] = [calls[i][n] for n in sorted(calls[i])]
    out = {"id": head.get("id", ""), "object": "chat.completion", "created": head.get("created", 0),
           "model": head.get("model", ""), "choices": [choices[i] for i in sorted(choices)]}
    if "system_fingerprint" in head:
        out["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        out["usage"] = usage
    return out


def _fold_call(calls: dict[int, dict], delta: dict) -> None:
    n = int(delta.get("index", len(calls)))
    call = calls.setdefault(n, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        call["function"]["arguments"] += fn["arguments"]


def replay_chunks(completion: dict) -> list[dict]:
    head = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    if "system_fingerprint" in completion:
        head["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: int, delta: dict, finish: str | None = None, logprobs: Any = None) -> dict:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish}]}

    out = []
    for choice in completion.get("choices") or []:
        i = choice.get("index", 0)
        message = dict(choice.get("message") or {})
        tool_calls = message.pop("tool_calls", None) or []
        out.append(chunk(i, {"role": "assistant", **message}, logprobs=choice.get("logprobs")))
        for n, call in enumerate(tool_calls):
            out.append(chunk(i, {"tool_calls": [{"index": n, **call}]}))
        out.append(chunk(i, {}, choice.get("finish_reason") or "stop"))
    if completion.get("usage") is not None:
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out


# ---------------------------------------------------------------------------------------------- Anthropic


def assemble_events(events: Iterable[tuple[str, dict]]) -> dict | None:
    message: dict | None = None
    blocks: dict[int, dict] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        kind = data.get("type", name)
        if kind == "error":
            return None
        if kind == "message_start":
            message = dict(data.get("message") or {})
        elif kind == "content_block_start":
            blocks[int(data.get("index", len(blocks)))] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            i = int(data.get("index", 0))
            _fold_delta(blocks.setdefault(i, {}), partial, i, data.get("delta") or {})
        elif kind == "content_block_stop":
            i = int(data.get("index", 0))
            if i in partial and i in blocks:
                blocks[i]["input"] = _json_object(partial.pop(i))
        elif kind == "message_delta" and message is not None:
            message.update(data.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}),
                                **{k: v for k, v in (data.get("usage") or {}).items() if v is not None}}
        elif kind == "message_stop" and message is not None:
            message["content"] = [blocks[i] for i in sorted(blocks)]
            return message
    return None


def _fold_delta(block: dict, partial: dict[int, str], index: int, delta: dict) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + (delta.get("text") or "")
    elif kind == "input_json_delta":
        partial[index] = partial.get(index, "") + (delta.get("partial_json") or "")
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + (delta.get("thinking") or "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "citations_delta" and delta.get("citation") is not None:
        block["citations"] = [*(block.get("citations") or []), delta["citation"]]


def _json_object(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw": text}


def replay_events(message: dict) -> list[tuple[str, dict]]:
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 0}}
    out: list[tuple[str, dict]] = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(message.get("content") or []):
        head, deltas = _block_events(block)
        out.append(("content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": head}))
        out += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
                for d in deltas]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": message.get("stop_reason"),
                                            "stop_sequence": message.get("stop_sequence")},
                                  "usage": usage}))
    out.append(("message_stop", {"type": "message_stop"}))
    return out


def _block_events(block: dict) -> tuple[dict, list[dict]]:
    """A content block's ``content_block_start`` body and its deltas."""
    kind = block.get("type")
    if kind == "text":
        head = {k: v for k, v in block.items() if k != "citations"}
        deltas = [{"type": "citations_delta", "citation": c} for c in block.get("citations") or []]
        return {**head, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}, *deltas]
    if kind == "tool_use":
        arguments = json.dumps(block.get("input", {}), separators=(",", ":"), ensure_ascii=False)
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": arguments}]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {**block, "thinking": "", "signature": ""}, deltas
    return block, []  # redacted_thinking, server tool blocks...: whole in their start event
