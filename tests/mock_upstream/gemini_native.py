"""Gemini native dialect: request parsing and response / SSE rendering (CRLF framing, no [DONE])."""
from __future__ import annotations

import json

from tests.mock_upstream.core import (
    DEFAULT_CHUNKS,
    EMBED_DIMS,
    Prompt,
    Reply,
    Tool,
    count_tokens,
    digest,
    embedding,
    image_from_b64,
    split_text,
    thought_signature,
)

IMAGE_TOKENS = 258
MAX_BATCH = 100
_CHAT_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_EMBED_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
MODELS = [
    ("gemini-2.5-flash", "Gemini 2.5 Flash", _CHAT_METHODS, 1048576, 65536),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", _CHAT_METHODS, 1048576, 65536),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", _CHAT_METHODS, 1048576, 65536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", _CHAT_METHODS, 1048576, 8192),
    ("gemini-3-pro-preview", "Gemini 3 Pro Preview", _CHAT_METHODS, 1048576, 65536),
    ("gemini-embedding-001", "Gemini Embedding 001", _EMBED_METHODS, 2048, 1),
    ("text-embedding-004", "Text Embedding 004", ["embedContent"], 2048, 1),
]


def _texts(content: dict) -> list[str]:
    return [p["text"] for p in content.get("parts", [])
            if isinstance(p.get("text"), str) and not p.get("thought")]


def parse_prompt(model: str, body: dict) -> Prompt:
    contents = body.get("contents") or []
    p = Prompt(model=model)
    last_user = next((c for c in reversed(contents) if c.get("role", "user") != "model"), {})
    for part in last_user.get("parts", []):
        if "functionResponse" in part:
            fr = part["functionResponse"]
            p.tool_result = (fr.get("name", ""), json.dumps(fr.get("response"), sort_keys=True))
        elif "inlineData" in part:
            d = part["inlineData"]
            p.images.append(image_from_b64(d.get("data", ""), d.get("mimeType")))
    p.last_text = " ".join(_texts(last_user))
    cfg = body.get("generationConfig") or {}
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if fcc.get("mode", "AUTO") != "NONE":
        allowed = fcc.get("allowedFunctionNames")
        for t in body.get("tools") or []:
            for decl in t.get("functionDeclarations") or []:
                if not allowed or decl.get("name") in allowed:
                    params = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
                    p.tools.append(Tool(decl.get("name", ""), params))
    p.json_mode = cfg.get("responseMimeType") == "application/json"
    thinking = cfg.get("thinkingConfig")
    p.thinking = isinstance(thinking, dict) and thinking.get("thinkingBudget", -1) != 0
    p.include_thoughts = bool(p.thinking and thinking.get("includeThoughts"))
    all_text = [t for c in contents for t in _texts(c)]
    all_text += _texts(body.get("systemInstruction") or {})
    n_images = sum(1 for c in contents for part in c.get("parts", []) if "inlineData" in part)
    p.prompt_tokens = sum(count_tokens(t) for t in all_text) + IMAGE_TOKENS * n_images or 1
    return p


def history_signatures(model: str, body: dict) -> list[dict]:
    """Each functionCall part in a model turn: name, signature (or None), and whether we issued it."""
    out = []
    for content in body.get("contents") or []:
        if content.get("role") != "model":
            continue
        for part in content.get("parts", []):
            if "functionCall" in part:
                fc = part["functionCall"]
                sig = part.get("thoughtSignature")
                known = sig == thought_signature(model, fc.get("name", ""), fc.get("args") or {})
                out.append({"name": fc.get("name"), "signature": sig, "known": bool(sig) and known})
    return out


def _usage(r: Reply, final: bool) -> dict:
    u: dict = {"promptTokenCount": r.prompt_tokens}
    if final:
        u["candidatesTokenCount"] = r.completion_tokens
    u["totalTokenCount"] = r.prompt_tokens + (r.completion_tokens if final else 0) + r.thoughts_tokens
    u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": r.prompt_tokens}]
    if r.thoughts_tokens:
        u["thoughtsTokenCount"] = r.thoughts_tokens
    return u


def _call_parts(model: str, r: Reply) -> list[dict]:
    return [{"functionCall": {"name": c.name, "args": c.args},
             "thoughtSignature": thought_signature(model, c.name, c.args)} for c in r.tool_calls]


def _envelope(model: str, r: Reply, parts: list[dict], *, final: bool) -> dict:
    cand: dict = {"content": {"parts": parts, "role": "model"}}
    if final:
        cand["finishReason"] = "STOP"
    cand["index"] = 0
    if final and r.tool_calls:
        cand["finishMessage"] = "Model generated function call(s)."
    return {"candidates": [cand], "usageMetadata": _usage(r, final), "modelVersion": model,
            "responseId": digest("gemini", model, r.text, r.prompt_tokens)[:22]}


def generate(model: str, r: Reply) -> dict:
    parts: list[dict] = []
    if r.thought:
        parts.append({"text": r.thought, "thought": True})
    if r.text:
        parts.append({"text": r.text})
    parts += _call_parts(model, r)
    return _envelope(model, r, parts, final=True)


def stream_chunks(model: str, r: Reply, chunks: int | None) -> list[dict]:
    out: list[dict] = []
    if r.thought:
        out.append(_envelope(model, r, [{"text": r.thought, "thought": True}], final=False))
    if r.tool_calls:
        out.append(_envelope(model, r, _call_parts(model, r), final=True))
        return out
    pieces = split_text(r.text, chunks or DEFAULT_CHUNKS)
    for i, piece in enumerate(pieces):
        out.append(_envelope(model, r, [{"text": piece}], final=i == len(pieces) - 1))
    return out


def sse_frame(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"


def stream_frames(model: str, r: Reply, chunks: int | None) -> list[tuple[bytes, bool]]:
    return [(sse_frame(c), True) for c in stream_chunks(model, r, chunks)]


def _embed_text(content: dict) -> str:
    return " ".join(_texts(content or {}))


def embed(body: dict) -> dict:
    dims = int(body.get("outputDimensionality") or EMBED_DIMS)
    return {"embedding": {"values": embedding(_embed_text(body.get("content")), dims)}}


def batch_embed(model: str, body: dict) -> tuple[int, dict | str]:
    """(200, response) or (400, error message)."""
    reqs = body.get("requests") or []
    if len(reqs) > MAX_BATCH:
        return 400, (f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one "
                     "batch\n")
    out = []
    for req in reqs:
        if req.get("model", f"models/{model}").removeprefix("models/") != model:
            return 400, "Model in each request must match the model in the batch request."
        dims = int(req.get("outputDimensionality") or EMBED_DIMS)
        out.append({"values": embedding(_embed_text(req.get("content")), dims)})
    return 200, {"embeddings": out}


def model_info(mid: str) -> dict | None:
    for name, display, methods, in_limit, out_limit in MODELS:
        if name == mid:
            return {"name": f"models/{name}", "version": "001", "displayName": display,
                    "description": f"{display} (mock)", "inputTokenLimit": in_limit,
                    "outputTokenLimit": out_limit, "supportedGenerationMethods": list(methods),
                    "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2}
    return None


def list_models(page_size: int | None, page_token: str | None) -> tuple[int, dict | str]:
    size = min(max(1, page_size or 50), 1000)
    start = 0
    if page_token:
        if not page_token.startswith("pg") or not page_token[2:].isdigit():
            return 400, "Invalid page token."
        start = int(page_token[2:])
    names = [m[0] for m in MODELS]
    body: dict = {"models": [model_info(n) for n in names[start : start + size]]}
    if start + size < len(names):
        body["nextPageToken"] = f"pg{start + size}"
    return 200, body

