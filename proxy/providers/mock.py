"""The built-in ``mock`` provider: deterministic answers with no upstream, so keyrelay works out of the box.

Answers are derived from the request alone (same request → same answer), streaming included, with
optional simulated latency (``latency_ms`` before the answer, ``chunk_delay_ms`` between chunks).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

from proxy.providers import toolkit as tk
from proxy.providers.base import Call


def _last_user_text(req: dict) -> str:
    for msg in reversed(req.get("messages") or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, (str, list)):
                return tk.text_of(content, sep=" ")
    return ""


def _answer(req: dict) -> str:
    prompt = " ".join(_last_user_text(req).split())[:200]
    return f"Mock answer from keyrelay to: {prompt}" if prompt else "Mock answer from keyrelay."


def _tool_call(req: dict) -> dict | None:
    """Call the first declared tool when the conversation ends with a user turn."""
    tools = req.get("tools") or []
    messages = req.get("messages") or []
    if not tools or req.get("tool_choice") == "none" or not messages or messages[-1].get("role") != "user":
        return None
    fn = tools[0].get("function") or {}
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    return {
        "id": f"call_mock{digest[:12]}",
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": "{}"},
    }


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _usage(req: dict, completion: str) -> dict:
    prompt = sum(_tokens(json.dumps(m.get("content"))) for m in req.get("messages") or [])
    out = _tokens(completion)
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}


def _response_id(req: dict) -> str:
    return "chatcmpl-mock" + hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()[:20]


class MockAdapter:
    def __init__(self, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0) -> None:
        self.latency = latency_ms / 1000
        self.chunk_delay = chunk_delay_ms / 1000

    def chat(self, call: Call, req: dict) -> dict:
        if self.latency:
            time.sleep(self.latency)
        call_ = _tool_call(req)
        text = None if call_ else _answer(req)
        message = tk.assistant_message(text, [call_] if call_ else None)
        choice = tk.completion_choice(0, message, "tool_calls" if call_ else "stop")
        model = req.get("model", call.model)
        return tk.completion(_response_id(req), int(time.time()), model, [choice], _usage(req, text or ""))

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]:
        if self.latency:
            time.sleep(self.latency)
        stream = tk.StreamChunks(req.get("model", call.model), _response_id(req))
        chunk = stream.make_chunk

        yield chunk({"role": "assistant", "content": ""})
        call_ = _tool_call(req)
        text = ""
        if call_:
            yield chunk({"tool_calls": [{"index": 0, **call_}]})
        else:
            text = _answer(req)
            words = text.split(" ")
            for i, word in enumerate(words):
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
                yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "tool_calls" if call_ else "stop")
        if (req.get("stream_options") or {}).get("include_usage"):
            yield stream.make_usage_chunk(_usage(req, text))

    def embeddings(self, call: Call, req: dict) -> dict:
        inputs = req.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = int(req.get("dimensions") or 8)
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode()).digest()
            vec = [round((digest[j % len(digest)] - 127.5) / 127.5, 6) for j in range(dims)]
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(_tokens(str(x)) for x in items)
        return {
            "object": "list",
            "data": data,
            "model": req.get("model", call.model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def probe(self, call: Call) -> None:
        return None
