"""Ollama native dialect: /api/chat as NDJSON lines (final line done:true with stats) or one JSON object."""
from __future__ import annotations

import json

from tests.mock_upstream.core import (
    DEFAULT_CHUNKS,
    Prompt,
    Reply,
    Tool,
    count_tokens,
    image_from_b64,
    split_text,
)

CREATED_AT = "2024-09-26T10:22:48.123456Z"
MODELS = ["llama3.2:latest", "qwen2.5:7b"]


def parse_prompt(model: str, body: dict) -> Prompt:
    messages = body.get("messages") or []
    p = Prompt(model=model)
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        p.tool_result = (last.get("tool_name") or last.get("name") or "tool", str(last.get("content", "")))
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    p.last_text = str(user.get("content") or "")
    p.images = [image_from_b64(img) for img in user.get("images") or []]
    for t in body.get("tools") or []:
        fn = t.get("function") or {}
        p.tools.append(Tool(fn.get("name", ""), fn.get("parameters") or {}))
    p.json_mode = body.get("format") == "json" or isinstance(body.get("format"), dict)
    p.prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages) or 1
    return p


def _final(model: str, r: Reply, message: dict) -> dict:
    return {"model": model, "created_at": CREATED_AT, "message": message, "done": True, "done_reason": "stop",
            "total_duration": 5_000_000 + 1_000_000 * r.completion_tokens, "load_duration": 1_000_000,
            "prompt_eval_count": r.prompt_tokens, "prompt_eval_duration": 100_000 * r.prompt_tokens,
            "eval_count": r.completion_tokens, "eval_duration": 1_000_000 * r.completion_tokens}


def _tool_calls(r: Reply) -> list[dict]:
    return [{"function": {"name": c.name, "arguments": c.args}} for c in r.tool_calls]


def chat(model: str, r: Reply) -> dict:
    msg: dict = {"role": "assistant", "content": r.text}
    if r.tool_calls:
        msg["tool_calls"] = _tool_calls(r)
    return _final(model, r, msg)


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _part(model: str, msg: dict) -> bytes:
    return _line({"model": model, "created_at": CREATED_AT, "message": msg, "done": False})


def stream_frames(model: str, r: Reply, chunks: int | None) -> list[tuple[bytes, bool]]:
    frames = []
    if r.tool_calls:
        msg = {"role": "assistant", "content": "", "tool_calls": _tool_calls(r)}
        frames.append((_part(model, msg), True))
    else:
        for piece in split_text(r.text, chunks or DEFAULT_CHUNKS):
            frames.append((_part(model, {"role": "assistant", "content": piece}), True))
    frames.append((_line(_final(model, r, {"role": "assistant", "content": ""})), False))
    return frames


def tags() -> dict:
    return {"models": [{"name": m, "model": m, "modified_at": CREATED_AT, "size": 2019393189,
                        "digest": f"{i:064x}", "details": {"format": "gguf", "family": "llama",
                                                           "parameter_size": "3.2B",
                                                           "quantization_level": "Q4_K_M"}}
                       for i, m in enumerate(MODELS, start=1)]}
