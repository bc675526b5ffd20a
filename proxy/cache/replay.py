"""A stored answer ⇄ a stream, in each dialect (pure functions on plain data).

* OpenAI: ``assemble_chunks`` folds a ``chat.completion.chunk`` stream into the ``chat.completion`` it
  stands for (None when it is incomplete: a choice without ``finish_reason``); ``replay_chunks`` turns a
  completion back into a valid chunk stream (role and text, each tool call whole, the finish reason, the
  usage-only chunk).
* Anthropic: ``assemble_events`` folds the message events into the message (None without
  ``message_stop``, or after an ``error`` event); ``replay_events`` gives the legal event order back:
  message_start, per block content_block_start / _delta / _stop, message_delta, message_stop.
* Gemini: ``assemble_gemini`` folds ``streamGenerateContent`` events into the ``generateContent``
  answer (None after an error event, or when a candidate has no ``finishReason``); ``replay_gemini``
  streams it back, one part per event, the finish reason and usage in the last.
* The Responses API caches the chat completion behind its answer: its streams are the OpenAI chunks
  above, turned into typed events by ``responses_shape.ResponseEvents`` (docs/cache.md).
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


# ---------------------------------------------------------------------------------------------- Gemini

_GEMINI_TEXT_KEYS = frozenset({"text", "thought"})  # a part of only these keys concatenates with the last


def assemble_gemini(events: Iterable[dict]) -> dict | None:
    """Fold ``streamGenerateContent`` events (each a ``GenerateContentResponse``) into the
    ``generateContent`` answer they stand for: parts appended in order (consecutive plain text parts
    joined), every other field from the latest event that has it. None when an event is an ``error`` or
    a candidate ended without ``finishReason`` (the stream was cut)."""
    out: dict[str, Any] = {}
    candidates: dict[int, dict] = {}
    for event in events:
        if "error" in event:
            return None
        for k, v in event.items():
            if k != "candidates":
                out[k] = v
        for cand in event.get("candidates") or []:
            i = int(cand.get("index", 0))
            have = candidates.setdefault(i, {"content": {"role": "model", "parts": []}, "index": i})
            for k, v in cand.items():
                if k == "content":
                    _fold_parts(have["content"], v or {})
                elif k != "index":
                    have[k] = v
    if not candidates or any("finishReason" not in c for c in candidates.values()):
        return None
    return {"candidates": [candidates[i] for i in sorted(candidates)], **out}


def _fold_parts(content: dict, delta: dict) -> None:
    if delta.get("role"):
        content["role"] = delta["role"]
    parts = content["parts"]
    for part in delta.get("parts") or []:
        last = parts[-1] if parts else None
        if (last is not None and isinstance(part.get("text"), str) and part.keys() <= _GEMINI_TEXT_KEYS
                and last.keys() <= _GEMINI_TEXT_KEYS and isinstance(last.get("text"), str)
                and bool(last.get("thought")) == bool(part.get("thought"))):
            last["text"] += part["text"]
        else:
            parts.append(dict(part))


def replay_gemini(answer: dict) -> list[dict]:
    """A ``generateContent`` answer as stream events: one part per event, the last one with the
    candidate's ``finishReason`` (and its other fields) and the ``usageMetadata``, as Gemini streams."""
    candidates = answer.get("candidates") or []
    parts = ((candidates[0].get("content") or {}).get("parts") or []) if len(candidates) == 1 else []
    if len(parts) < 2:
        return [answer]  # one event says it all (several candidates, a single part, none)
    cand, rest = candidates[0], {k: v for k, v in answer.items() if k != "candidates"}
    head = {k: v for k, v in rest.items() if k in ("modelVersion", "responseId")}
    role = (cand.get("content") or {}).get("role", "model")
    events = [{"candidates": [{"content": {"role": role, "parts": [p]}, "index": cand.get("index", 0)}],
               **head} for p in parts[:-1]]
    events.append({"candidates": [{**cand, "content": {"role": role, "parts": [parts[-1]]}}], **rest})
    return events
