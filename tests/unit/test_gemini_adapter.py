"""GeminiAdapter HTTP I/O against a tiny real HTTP server on 127.0.0.1 serving recorded Gemini payloads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy.errors import AUTH, QUOTA, TRANSIENT, UpstreamError
from proxy.providers.base import Call, Timeouts
from proxy.providers.gemini import GeminiAdapter

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
KEY = "key1234"  # the recorded 400 body's DebugInfo contains this string


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
                path = self.path.split("?", 1)[0]
                upstream.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = upstream.routes.get((self.command, path), (404, {}, b"{}"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for i in range(0, len(payload), 97):  # dribble the body out in pieces
                    self.wfile.write(payload[i : i + 97])
                    self.wfile.flush()

            do_GET = do_POST = _serve

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1beta"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def route(self, method: str, path: str, status: int, body: bytes, headers: dict | None = None) -> None:
        self.routes[(method, "/v1beta" + path)] = (status, headers or {}, body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def call_for(up: Upstream, model: str = "gemini-2.0-flash") -> Call:
    return Call(base_url=up.base, model=model, key=KEY, timeouts=Timeouts(connect=2, first_byte=5, idle=5))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def assert_key_only_in_header(up: Upstream) -> None:
    assert up.requests
    for req in up.requests:
        assert req["headers"].get("x-goog-api-key") == KEY
        assert KEY not in req["path"]
        assert "key=" not in req["path"]


REQ = {"model": "fast", "messages": [{"role": "user", "content": "Where is Google?"}]}


def test_chat(upstream):
    upstream.route(
        "POST", "/models/gemini-2.0-flash:generateContent", 200, fixture("gemini-generate-text.json")
    )
    out = GeminiAdapter().chat(call_for(upstream), REQ)
    assert out["model"] == "fast"
    assert out["choices"][0]["message"]["content"].startswith("Google's headquarters")
    assert json.loads(upstream.requests[0]["body"]) == {
        "contents": [{"role": "user", "parts": [{"text": "Where is Google?"}]}]
    }
    assert_key_only_in_header(upstream)


def test_chat_api_key_invalid_is_auth_and_never_shows_the_key(upstream):
    upstream.route(
        "POST",
        "/models/gemini-2.0-flash:generateContent",
        400,
        fixture("gemini-error-400-api-key-invalid.json"),
    )
    with pytest.raises(UpstreamError) as info:
        GeminiAdapter().chat(call_for(upstream), REQ)
    assert (info.value.outcome, info.value.status) == (AUTH, 401)
    assert KEY not in str(info.value) and KEY not in info.value.message


def test_stream_sends_nothing_before_first_next_and_yields_chunks(upstream):
    upstream.route(
        "POST", "/models/gemini-2.0-flash:streamGenerateContent", 200, fixture("gemini-stream-text.sse"),
        {"content-type": "text/event-stream"},
    )  # fmt: skip
    gen = GeminiAdapter().chat_stream(call_for(upstream), {**REQ, "stream": True})
    time.sleep(0.05)
    assert upstream.requests == []
    chunks = list(gen)
    assert upstream.requests[0]["path"].endswith(":streamGenerateContent?alt=sse")
    assert_key_only_in_header(upstream)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "The capital of Wyoming is **Cheyenne**.\n"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)  # no usage chunk unless asked for


def test_stream_include_usage_adds_final_usage_chunk(upstream):
    upstream.route(
        "POST", "/models/gemini-2.5-flash:streamGenerateContent", 200,
        fixture("gemini-stream-thinking-functioncall.sse"),
    )  # fmt: skip
    req = {**REQ, "stream": True, "stream_options": {"include_usage": True}}
    chunks = list(GeminiAdapter().chat_stream(call_for(upstream, "gemini-2.5-flash"), req))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 174
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_error_status_raises_before_first_chunk(upstream):
    upstream.route(
        "POST", "/models/gemini-2.0-flash:streamGenerateContent", 429,
        fixture("gemini-error-429-resource-exhausted.json"),
    )  # fmt: skip
    gen = GeminiAdapter().chat_stream(call_for(upstream), REQ)
    with pytest.raises(UpstreamError) as info:
        next(gen)
    assert (info.value.outcome, info.value.status, info.value.retry_after) == (QUOTA, 429, 34.4)


def test_stream_error_event_first_is_classified(upstream):
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    upstream.route("POST", "/models/gemini-2.0-flash:streamGenerateContent", 200,
                   b"data: " + json.dumps(err).encode() + b"\r\n\r\n")  # fmt: skip
    with pytest.raises(UpstreamError) as info:
        next(GeminiAdapter().chat_stream(call_for(upstream), REQ))
    assert (info.value.outcome, info.value.status) == (TRANSIENT, 503)


def test_stream_error_after_chunks_is_transient(upstream):
    first = fixture("gemini-stream-text.sse").split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    err = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    upstream.route("POST", "/models/gemini-2.0-flash:streamGenerateContent", 200,
                   first + b"data: " + json.dumps(err).encode() + b"\r\n\r\n")  # fmt: skip
    gen = GeminiAdapter().chat_stream(call_for(upstream), REQ)
    got = [next(gen), next(gen)]
    assert got[1]["choices"][0]["delta"]["content"] == "The"
    with pytest.raises(UpstreamError) as info:
        next(gen)
    assert info.value.outcome == TRANSIENT


def test_empty_stream_is_transient_before_any_chunk(upstream):
    upstream.route("POST", "/models/gemini-2.0-flash:streamGenerateContent", 200, b"")
    with pytest.raises(UpstreamError) as info:
        next(GeminiAdapter().chat_stream(call_for(upstream), REQ))
    assert info.value.outcome == TRANSIENT


def test_stream_close_mid_way(upstream):
    upstream.route("POST", "/models/gemini-2.0-flash:streamGenerateContent", 200,
                   fixture("gemini-stream-recitation-no-content.sse"))  # fmt: skip
    gen = GeminiAdapter().chat_stream(call_for(upstream), REQ)
    next(gen)
    next(gen)
    gen.close()  # client went away: must not raise and must release the connection
    # the adapter still works afterwards
    assert len(list(GeminiAdapter().chat_stream(call_for(upstream), REQ))) > 5


def test_embeddings(upstream):
    upstream.route("POST", "/models/text-embedding-004:embedContent", 200,
                   json.dumps({"embedding": {"values": [0.1, 0.2]}}).encode())  # fmt: skip
    upstream.route("POST", "/models/text-embedding-004:batchEmbedContents", 200,
                   json.dumps({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}).encode())  # fmt: skip
    adapter, call = GeminiAdapter(), call_for(upstream, "text-embedding-004")
    one = adapter.embeddings(call, {"model": "emb", "input": "hi"})
    assert one["model"] == "emb" and one["data"][0]["embedding"] == [0.1, 0.2]
    many = adapter.embeddings(call, {"model": "emb", "input": ["a", "b"]})
    assert [d["embedding"] for d in many["data"]] == [[1.0], [2.0]]
    assert json.loads(upstream.requests[1]["body"])["requests"][0]["model"] == "models/text-embedding-004"
    assert_key_only_in_header(upstream)


def test_probe(upstream):
    upstream.route("GET", "/models", 200, json.dumps({"models": [{"name": "models/a"}]}).encode())
    adapter, call = GeminiAdapter(), call_for(upstream)
    adapter.probe(call)
    assert upstream.requests[-1]["path"] == "/v1beta/models?pageSize=1"
    assert_key_only_in_header(upstream)


def test_probe_with_bad_key_raises_auth(upstream):
    upstream.route("GET", "/models", 403, fixture("gemini-error-403-permission-denied.json"))
    with pytest.raises(UpstreamError) as info:
        GeminiAdapter().probe(call_for(upstream))
    assert info.value.outcome == AUTH


def test_unreachable_upstream_is_transient():
    call = Call(base_url="http://127.0.0.1:9/v1beta", model="m", key=KEY, timeouts=Timeouts(1, 1, 1))
    with pytest.raises(UpstreamError) as info:
        GeminiAdapter().chat(call, REQ)
    assert info.value.outcome == TRANSIENT
