"""OpenAIAdapter HTTP I/O against a tiny real HTTP server on 127.0.0.1 serving recorded OpenAI streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionChunk

from proxy.errors import AUTH, CLIENT, QUOTA, TRANSIENT, UpstreamError
from proxy.providers.base import Call, Timeouts
from proxy.providers.openai import OpenAIAdapter, classify_error, parse_duration, redact

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
KEY = "sk-test-SECRET-0123456789abcdef"


class Upstream:
    """Routes (method, path) -> (status, headers, body bytes); records every request it receives."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, dict, bytes]] = {}
        self.requests: list[dict] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = upstream.routes.get((self.command, self.path), (404, {}, b"{}"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for i in range(0, len(payload), 89):  # dribble the body out in pieces
                    self.wfile.write(payload[i : i + 89])
                    self.wfile.flush()

            do_GET = do_POST = _serve

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def route(
        self, method: str, path: str, status: int, body: bytes | dict, headers: dict | None = None
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.routes[(method, "/v1" + path)] = (status, headers or {}, raw)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def call_for(up: Upstream, key: str | None = KEY) -> Call:
    return Call(base_url=up.base, model="gpt-4o-2024-08-06", key=key,
                timeouts=Timeouts(connect=2, first_byte=5, idle=5))  # fmt: skip


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


REQ = {"model": "smart", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip


def test_chat_passes_through_with_model_renamed(upstream):
    upstream.route("POST", "/chat/completions", 200, COMPLETION)
    out = OpenAIAdapter().chat(call_for(upstream), {**REQ, "temperature": 0.5, "stream": False})
    assert out["model"] == "smart"
    assert out["choices"] == COMPLETION["choices"]
    sent = upstream.requests[0]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert json.loads(sent["body"]) == {
        "model": "gpt-4o-2024-08-06",
        "messages": REQ["messages"],
        "temperature": 0.5,
    }


def test_no_key_means_no_authorization_header(upstream):
    upstream.route("POST", "/chat/completions", 200, COMPLETION)
    OpenAIAdapter().chat(call_for(upstream, key=None), REQ)
    assert "Authorization" not in upstream.requests[0]["headers"]


def test_stream_text_fixture_relayed_with_usage(upstream):
    upstream.route("POST", "/chat/completions", 200, fixture("openai-stream-text-usage.sse"))
    req = {**REQ, "stream": True, "stream_options": {"include_usage": True}}
    gen = OpenAIAdapter().chat_stream(call_for(upstream), req)
    assert upstream.requests == []  # nothing is sent before the first next()
    chunks = list(gen)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    sent = json.loads(upstream.requests[0]["body"])
    assert sent["stream"] is True and sent["model"] == "gpt-4o-2024-08-06"
    assert sent["stream_options"] == {"include_usage": True}
    assert all(c["model"] == "smart" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 44
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("I'm unable to provide")


def test_stream_parallel_tool_calls_fixture(upstream):
    upstream.route("POST", "/chat/completions", 200, fixture("openai-stream-parallel-tool-calls.sse"))
    chunks = list(OpenAIAdapter().chat_stream(call_for(upstream), {**REQ, "stream": True}))
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            args[tc["index"]] = args.get(tc["index"], "") + tc["function"].get("arguments", "")
            if tc["function"].get("name"):
                names[tc["index"]] = tc["function"]["name"]
    assert sorted(args) == [0, 1]
    assert all(isinstance(json.loads(a), dict) for a in args.values())
    assert names == {0: "GetWeatherArgs", 1: "get_stock_price"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_stream_error_status_raises_before_first_chunk(upstream):
    body = {"error": {"message": "Rate limit reached for gpt-4o. Please try again in 6ms.", "type": "tokens",
                      "param": None, "code": "rate_limit_exceeded"}}  # fmt: skip
    upstream.route("POST", "/chat/completions", 429, body)
    with pytest.raises(UpstreamError) as info:
        next(OpenAIAdapter().chat_stream(call_for(upstream), REQ))
    assert (info.value.outcome, info.value.status) == (QUOTA, 429)
    assert info.value.retry_after == pytest.approx(0.006)


def test_stream_error_event_after_chunks_is_transient(upstream):
    first = fixture("openai-stream-text-usage.sse").split(b"\n\n")[0] + b"\n\n"
    err = b'data: {"error": {"message": "overloaded", "code": 502}}\n\n'
    upstream.route("POST", "/chat/completions", 200, first + err)
    gen = OpenAIAdapter().chat_stream(call_for(upstream), REQ)
    assert next(gen)["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(UpstreamError) as info:
        next(gen)
    assert info.value.outcome == TRANSIENT


def test_stream_cut_before_done_is_transient(upstream):
    first = fixture("openai-stream-text-usage.sse").split(b"\n\n")[0] + b"\n\n"
    upstream.route("POST", "/chat/completions", 200, first)
    gen = OpenAIAdapter().chat_stream(call_for(upstream), REQ)
    next(gen)
    with pytest.raises(UpstreamError) as info:
        next(gen)
    assert info.value.outcome == TRANSIENT


def test_auth_error_hides_upstream_message_and_key(upstream):
    body = {"error": {"message": f"Incorrect API key provided: {KEY[:8]}***...cdef. You can find...",
                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}  # fmt: skip
    upstream.route("POST", "/chat/completions", 401, body)
    with pytest.raises(UpstreamError) as info:
        OpenAIAdapter(name="openrouter").chat(call_for(upstream), REQ)
    assert (info.value.outcome, info.value.status) == (AUTH, 401)
    assert info.value.message.startswith("openrouter: ")
    assert KEY[:8] not in info.value.message


def test_embeddings_and_probe(upstream):
    upstream.route(
        "POST",
        "/embeddings",
        200,
        {
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}],
        },
    )
    upstream.route(
        "GET", "/models", 200, {"object": "list", "data": [{"id": "gpt-4o"}, {"id": "models/gemini-x"}]}
    )
    upstream.route("GET", "/key", 401, {"error": {"message": "No auth credentials found", "code": 401}})
    adapter, call = OpenAIAdapter(), call_for(upstream)
    out = adapter.embeddings(call, {"model": "emb", "input": "hi", "encoding_format": "base64"})
    assert out["model"] == "emb" and out["data"][0]["embedding"] == "AAAA"
    assert json.loads(upstream.requests[0]["body"])["model"] == "gpt-4o-2024-08-06"
    adapter.probe(call)
    assert upstream.requests[-1]["path"] == "/v1/models"
    with pytest.raises(UpstreamError) as info:
        OpenAIAdapter(probe_path="/key").probe(call)
    assert info.value.outcome == AUTH


def test_200_with_error_body_is_an_error(upstream):
    upstream.route(
        "POST", "/chat/completions", 200, {"error": {"message": "Provider returned error", "code": 502}}
    )
    with pytest.raises(UpstreamError) as info:
        OpenAIAdapter().chat(call_for(upstream), REQ)
    assert info.value.outcome == TRANSIENT


# ------------------------------------------------------------------------------------------- classify_error


def err_body(message: str = "m", code: str | None = None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "outcome", "client_status"),
    [(400, CLIENT, 400), (404, CLIENT, 404), (422, CLIENT, 422), (401, AUTH, 401), (403, AUTH, 403),
     (500, TRANSIENT, 502), (502, TRANSIENT, 502), (503, TRANSIENT, 503), (529, TRANSIENT, 503),
     (408, TRANSIENT, 504)],
)  # fmt: skip
def test_classify_by_status(status, outcome, client_status):
    err = classify_error(status, err_body("the model `x` does not exist"), {})
    assert (err.outcome, err.status, err.upstream_status) == (outcome, client_status, status)


def test_client_error_passes_message_through():
    err = classify_error(400, err_body("Invalid value for 'temperature'"), {}, prefix="groq")
    assert err.message == "groq: Invalid value for 'temperature'"


def test_rate_limit_hints():
    rate = err_body("Rate limit reached", "rate_limit_exceeded", "tokens")
    assert classify_error(429, rate, {"Retry-After": "3"}).retry_after == 3.0
    assert classify_error(429, rate, {"retry-after-ms": "1500"}).retry_after == 1.5
    headers = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s",
               "x-ratelimit-remaining-requests": "10", "x-ratelimit-remaining-tokens": "0"}  # fmt: skip
    assert classify_error(429, rate, headers).retry_after == 360.0
    msg = err_body(
        "Limit 30000, Used 18928, Requested 11159. Please try again in 174ms.", "rate_limit_exceeded"
    )
    err = classify_error(429, msg, {})
    assert err.outcome == QUOTA and err.daily is False and err.retry_after == pytest.approx(0.174)
    assert classify_error(429, b"not json", {}).retry_after is None


def test_insufficient_quota_and_402_are_daily():
    body = err_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota")
    err = classify_error(429, body, {})
    assert (err.outcome, err.status, err.daily) == (QUOTA, 429, True)
    err = classify_error(
        402, json.dumps({"error": {"message": "Insufficient credits", "code": 402}}).encode(), {}
    )
    assert (err.outcome, err.daily) == (QUOTA, True)


def test_redaction_and_durations():
    assert "sk-abc" not in redact("key sk-abc123***...wjh3 is wrong")
    assert redact("skipping tasks") == "skipping tasks"
    assert redact("has SECRETKEY inside", "SECRETKEY") == "has *** inside"
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("2") == 2.0
    assert parse_duration("soon") is None
    assert parse_duration(None) is None
