"""The bench's yardstick: a bare Flask + gevent relay that does only what no gateway can skip.

Parse the OpenAI body, build the Gemini body, make one upstream call with urllib3 (a pooled connection),
build the OpenAI answer; for ``stream: true`` relay each upstream SSE event as one OpenAI chunk. No keys,
limits, retries, logging or metrics. Served by gunicorn with keyrelay's worker settings (gevent,
``worker_connections``, keep-alive) so ``bench/run`` can report keyrelay as ratios to it:

    KEYRELAY_FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1beta gunicorn -k gevent -w 1 -b 127.0.0.1:PORT \\
        bench.floor:app

The upstream is the bench mock (``bench/mock.py``), the key a fixed fake one.
"""
from __future__ import annotations

import json
import os
import time

import urllib3
from flask import Flask, Response, request

UPSTREAM = os.environ.get("KEYRELAY_FLOOR_UPSTREAM", "http://127.0.0.1:9/v1beta")
KEY = "floor-bench-key-0000"
MODEL = "gemini-2.5-flash"

app = Flask("floor")
http = urllib3.PoolManager(maxsize=1000, block=False, retries=False,
                           timeout=urllib3.Timeout(connect=5, read=60))


def gemini_body(req: dict) -> dict:
    contents = [{"role": "model" if m.get("role") == "assistant" else "user",
                 "parts": [{"text": m.get("content") or ""}]}
                for m in req.get("messages", []) if m.get("role") != "system"]
    body: dict = {"contents": contents}
    if req.get("max_tokens"):
        body["generationConfig"] = {"maxOutputTokens": req["max_tokens"]}
    return body


def text_of(candidate: dict) -> str:
    return "".join(p.get("text", "") for p in (candidate.get("content") or {}).get("parts", []))


@app.post("/v1/chat/completions")
def chat() -> Response:
    req = json.loads(request.get_data())
    body = json.dumps(gemini_body(req)).encode()
    headers = {"Content-Type": "application/json", "x-goog-api-key": KEY}
    created = int(time.time())
    if not req.get("stream"):
        r = http.request("POST", f"{UPSTREAM}/models/{MODEL}:generateContent", body=body, headers=headers)
        g = json.loads(r.data)
        u = g.get("usageMetadata", {})
        answer = {"id": "chatcmpl-floor", "object": "chat.completion", "created": created,
                  "model": req["model"],
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": text_of(g["candidates"][0])}}],
                  "usage": {"prompt_tokens": u.get("promptTokenCount", 0),
                            "completion_tokens": u.get("candidatesTokenCount", 0),
                            "total_tokens": u.get("totalTokenCount", 0)}}
        return Response(json.dumps(answer), mimetype="application/json")
    r = http.request("POST", f"{UPSTREAM}/models/{MODEL}:streamGenerateContent?alt=sse", body=body,
                     headers=headers, preload_content=False)

    def events():  # noqa: ANN202
        try:
            for line in _lines(r):
                if not line.startswith(b"data:"):
                    continue
                g = json.loads(line[5:])
                chunk = {"id": "chatcmpl-floor", "object": "chat.completion.chunk", "created": created,
                         "model": req["model"],
                         "choices": [{"index": 0, "delta": {"content": text_of(g["candidates"][0])},
                                      "finish_reason": None}]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            r.release_conn()

    return Response(events(), mimetype="text/event-stream")


def _lines(r: urllib3.BaseHTTPResponse):  # noqa: ANN202
    """The upstream's SSE lines as they arrive (one read per network chunk, no buffering past a line)."""
    pending = b""
    while True:
        data = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        yield from (ln.rstrip(b"\r") for ln in lines if ln.strip())
    if pending.strip():
        yield pending


@app.get("/healthz")
def healthz() -> Response:
    return Response("ok")
