"""OpenAI-compatible dialect: chat completions (JSON and SSE ending with [DONE]), embeddings, models."""
from __future__ import annotations

import base64
import json
import struct

from tests.mock_upstream.core import (
    CREATED,
    DEFAULT_CHUNKS,
    EMBED_DIMS,
    Prompt,
    Reply,
    Tool,
    count_tokens,
    digest,
    embedding,
    image_from_data_url,
    split_json,
    split_text,
)

MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parse_prompt(model: str, body: dict) -> Prompt:
    messages = body.get("messages") or []
    p = Prompt(model=model)
    names = {tc.get("id"): tc.get("function", {}).get("name", "")
             for m in messages if m.get("role") == "assistant" for tc in m.get("tool_calls") or []}
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        p.tool_result = (names.get(last.get("tool_call_id"), "tool"), _content_text(last.get("content")))
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    p.last_text = _content_text(user.get("content"))
    if isinstance(user.get("content"), list):
        for part in user["content"]:
            if isinstance(part, dict) and part.get("type") == "image_url":
                img = image_from_data_url((part.get("image_url") or {}).get("url", ""))
                if img:
                    p.images.append(img)
    choice = body.get("tool_choice")
    if choice != "none":
        forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        for t in body.get("tools") or []:
            fn = t.get("function") or {}
            if forced is None or fn.get("name") == forced:
                p.tools.append(Tool(fn.get("name", ""), fn.get("parameters") or {}))
    p.json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    p.prompt_tokens = sum(count_tokens(_content_text(m.get("content"))) for m in messages) or 1
    return p


def _id(model: str, r: Reply) -> str:
    return "chatcmpl-" + digest("openai", model, r.text, r.prompt_tokens)[:29]


def _usage(r: Reply) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _finish(r: Reply) -> str:
    return "tool_calls" if r.tool_calls else "stop"


def completion(model: str, r: Reply) -> dict:
    msg: dict = {"role": "assistant", "content": r.text or None, "refusal": None}
    if r.tool_calls:
        msg["tool_calls"] = [{"id": f"call_{c.id}", "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}} for c in r.tool_calls]
    return {"id": _id(model, r), "object": "chat.completion", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": _finish(r)}],
            "usage": _usage(r)}


def stream_frames(model: str, r: Reply, chunks: int | None, include_usage: bool) -> list[tuple[bytes, bool]]:
    cid = _id(model, r)

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
               "system_fingerprint": "fp_mock",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    first = {"role": "assistant", "content": None} if r.tool_calls else {"role": "assistant", "content": "",
                                                                          "refusal": None}
    frames = [(chunk(first), False)]  # exactly as in the recorded fixtures
    if r.text:
        pieces = split_text(r.text, chunks or DEFAULT_CHUNKS)
        frames += [(chunk({"content": piece}), True) for piece in pieces]
    for i, c in enumerate(r.tool_calls):
        head = {"index": i, "id": f"call_{c.id}", "type": "function",
                "function": {"name": c.name, "arguments": ""}}
        frames.append((chunk({"tool_calls": [head]}), True))
        for frag in split_json(c.arguments):
            frames.append((chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}), True))
    frames.append((chunk({}, _finish(r)), False))
    if include_usage:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
               "system_fingerprint": "fp_mock", "choices": [], "usage": _usage(r)}
        frames.append((b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n", False))
    frames.append((b"data: [DONE]\n\n", False))
    return frames


def embeddings(model: str, body: dict) -> dict:
    raw = body.get("input")
    items = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    texts = [x if isinstance(x, str) else json.dumps(x) for x in items]
    dims = int(body.get("dimensions") or EMBED_DIMS)
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec = embedding(text, dims)
        value: object = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(count_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def list_models() -> dict:
    return {"object": "list",
            "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MODELS]}
