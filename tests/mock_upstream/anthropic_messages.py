"""Anthropic Messages dialect: JSON reply and the full SSE event sequence (as in the recorded fixture)."""
from __future__ import annotations

import json

from tests.mock_upstream.core import (
    DEFAULT_CHUNKS,
    Prompt,
    Reply,
    Tool,
    count_tokens,
    digest,
    image_from_b64,
    split_json,
    split_text,
)

MODELS = ["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"]
REQUIRED = ("model", "messages", "max_tokens")


def _block_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def missing_field(body: dict) -> str | None:
    return next((f for f in REQUIRED if f not in body), None)


def parse_prompt(model: str, body: dict) -> Prompt:
    messages = body.get("messages") or []
    p = Prompt(model=model)
    names = {b.get("id"): b.get("name", "")
             for m in messages if m.get("role") == "assistant" and isinstance(m.get("content"), list)
             for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"}
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = user.get("content")
    blocks = content if isinstance(content, list) else []
    for b in blocks:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "tool_result":
            p.tool_result = (names.get(b.get("tool_use_id"), "tool"), _block_text(b.get("content")))
        elif b.get("type") == "image" and (b.get("source") or {}).get("type") == "base64":
            src = b["source"]
            p.images.append(image_from_b64(src.get("data", ""), src.get("media_type")))
    p.last_text = _block_text(content)
    choice = body.get("tool_choice") or {}
    if choice.get("type") != "none":
        forced = choice.get("name") if choice.get("type") == "tool" else None
        for t in body.get("tools") or []:
            if "input_schema" in t and (forced is None or t.get("name") == forced):
                p.tools.append(Tool(t.get("name", ""), t.get("input_schema") or {}))
    p.thinking = (body.get("thinking") or {}).get("type") == "enabled"
    system = _block_text(body.get("system"))
    p.prompt_tokens = (sum(count_tokens(_block_text(m.get("content"))) for m in messages)
                       + (count_tokens(system) if system else 0)) or 1
    return p


def _preamble(r: Reply) -> str:
    if r.text:
        return r.text
    return "I'll use " + ", ".join(c.name for c in r.tool_calls) + "." if r.tool_calls else ""


def _ids(model: str, r: Reply) -> str:
    return "msg_" + digest("anthropic", model, r.text, r.prompt_tokens)[:24]


def _usage(r: Reply, output: int) -> dict:
    return {"input_tokens": r.prompt_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output, "service_tier": "standard"}


def _stop(r: Reply) -> str:
    return "tool_use" if r.tool_calls else "end_turn"


def message(model: str, r: Reply) -> dict:
    content: list[dict] = [{"type": "text", "text": _preamble(r)}]
    content += [{"type": "tool_use", "id": f"toolu_{c.id}", "name": c.name, "input": c.args}
                for c in r.tool_calls]
    return {"id": _ids(model, r), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _stop(r), "stop_sequence": None, "usage": _usage(r, r.completion_tokens)}


def _event(name: str, data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {name}\ndata: {text}\n\n".encode()


def stream_frames(model: str, r: Reply, chunks: int | None) -> list[tuple[bytes, bool]]:
    start = {"id": _ids(model, r), "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": _usage(r, 1)}
    frames = [
        (_event("message_start", {"type": "message_start", "message": start}), False),
        (_event("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}), False),
        (_event("ping", '{"type": "ping"}'), False),
    ]
    n = chunks or (DEFAULT_CHUNKS if r.text else 2)
    for piece in split_text(_preamble(r), n):
        frames.append((_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                      "delta": {"type": "text_delta", "text": piece}}), True))
    frames.append((_event("content_block_stop", {"type": "content_block_stop", "index": 0}), False))
    for i, c in enumerate(r.tool_calls, start=1):
        block = {"type": "tool_use", "id": f"toolu_{c.id}", "name": c.name, "input": {}}
        frames.append((_event("content_block_start",
                              {"type": "content_block_start", "index": i, "content_block": block}), False))
        for j, frag in enumerate([""] + split_json(c.arguments)):
            delta = {"type": "content_block_delta", "index": i,
                     "delta": {"type": "input_json_delta", "partial_json": frag}}
            frames.append((_event("content_block_delta", delta), j > 0))
        frames.append((_event("content_block_stop", {"type": "content_block_stop", "index": i}), False))
    frames.append((_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": _stop(r), "stop_sequence": None},
                                            "usage": {"output_tokens": r.completion_tokens}}), False))
    frames.append((_event("message_stop", {"type": "message_stop"}), False))
    return frames


def list_models() -> dict:
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-05-14T00:00:00Z"}
            for m in MODELS]
    return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
