"""Ollama native adapter: request/response translation and NDJSON streaming against a local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxy.errors import CLIENT, TRANSIENT, UpstreamError
from proxy.providers import ollama as oll
from proxy.providers.base import Call, Timeouts

# Shapes as in ollama docs/api.md (docs/upstream-api-notes.md §6.1).
STREAM_LINES = [
    {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "The"},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": " sky is blue."},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:01Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342546000,
        "eval_count": 282,
        "eval_duration": 4535599000,
    },
]
TOOL_ANSWER = {
    "model": "llama3.2",
    "created_at": "2025-01-01T00:00:00Z",
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ],
    },
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 50,
    "eval_count": 20,
}


def ndjson(objs: list[dict]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


class Upstream:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, list[bytes]]] = {}
        self.requests: list[dict] = []

    def route(self, method: str, path: str, status: int = 200, body: bytes | dict | list = b"") -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.routes[(method, path)] = (status, body if isinstance(body, list) else [body])


@pytest.fixture
def upstream():
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(raw) if raw else None,
                }
            )
            status, chunks = state.routes.get((self.command, self.path), (404, [b'{"error":"no route"}']))
            self.send_response(status)
            self.send_header("content-type", "application/x-ndjson")
            self.end_headers()
            for piece in chunks:
                self.wfile.write(piece)
                self.wfile.flush()

        do_GET = do_POST = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def make_call(base_url: str) -> Call:
    return Call(
        base_url=base_url,
        model="llama3.2",
        key="ignored-key",
        timeouts=Timeouts(connect=2, first_byte=5, idle=5),
    )


# ---------------------------------------------------------------- request translation


def test_request_options_format_and_roles():
    body = oll.to_ollama_request(
        {
            "model": "alias",
            "messages": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "temperature": 0.1,
            "top_p": 0.5,
            "seed": 42,
            "max_tokens": 64,
            "stop": "END",
            "response_format": {"type": "json_object"},
        },
        "llama3.2",
    )
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        "options": {"temperature": 0.1, "top_p": 0.5, "seed": 42, "num_predict": 64, "stop": ["END"]},
        "format": "json",
    }


def test_request_json_schema_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = oll.to_ollama_request(
        {
            "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        },
        "m",
    )
    assert body["format"] == schema


def test_request_images_tools_and_tool_history():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = oll.to_ollama_request(
        {
            "tools": tools,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is"},
                        {"type": "text", "text": "this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
            ],
        },
        "m",
    )
    assert body["tools"] == tools
    assert body["messages"] == [
        {"role": "user", "content": "What is\nthis?", "images": ["AAAA"]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "P"}}}],
        },
        {"role": "tool", "content": "20C", "tool_name": "get_weather"},
    ]


def test_request_rejects_remote_image_urls():
    with pytest.raises(UpstreamError) as exc:
        oll.to_ollama_request(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                    }
                ]
            },
            "m",
        )
    assert exc.value.outcome == CLIENT and exc.value.status == 400


# ---------------------------------------------------------------- response translation


def test_response_text():
    resp = oll.from_ollama_response(
        {**STREAM_LINES[-1], "message": {"role": "assistant", "content": "Hi!"}}, "a"
    )
    assert resp["object"] == "chat.completion" and resp["model"] == "a"
    assert resp["choices"][0]["message"] == {"role": "assistant", "content": "Hi!", "refusal": None}
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}


def test_response_length():
    resp = oll.from_ollama_response({"message": {"content": "x"}, "done": True, "done_reason": "length"}, "a")
    assert resp["choices"][0]["finish_reason"] == "length"


def test_response_tool_calls_get_ids_and_string_arguments():
    resp = oll.from_ollama_response(TOOL_ANSWER, "a")
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "Paris", "unit": "c"},
        {"city": "Rome"},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


# ---------------------------------------------------------------- I/O


def test_chat_stream_ndjson(upstream):
    raw = ndjson(STREAM_LINES)
    upstream.route("POST", "/api/chat", 200, [raw[:30], raw[30:100], raw[100:]])
    gen = oll.OllamaAdapter().chat_stream(
        make_call(upstream.base_url),
        {
            "model": "alias",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert upstream.requests == []
    chunks = list(gen)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The sky is blue."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 26,
        "completion_tokens": 282,
        "total_tokens": 308,
    }
    assert {c["model"] for c in chunks} == {"alias"} and len({c["id"] for c in chunks}) == 1
    sent = upstream.requests[0]
    assert sent["json"]["stream"] is True and sent["json"]["model"] == "llama3.2"
    assert "authorization" not in sent["headers"] and "ignored-key" not in json.dumps(sent)


def test_chat_stream_tool_calls(upstream):
    upstream.route("POST", "/api/chat", 200, ndjson([TOOL_ANSWER]))
    chunks = list(oll.OllamaAdapter().chat_stream(make_call(upstream.base_url), {"messages": []}))
    deltas = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert [d["index"] for d in deltas] == [0, 1]
    assert all(d["id"].startswith("call_") and d["type"] == "function" for d in deltas)
    assert json.loads(deltas[0]["function"]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_stream_error_line_midway(upstream):
    upstream.route("POST", "/api/chat", 200, ndjson([STREAM_LINES[0], {"error": "model runner crashed"}]))
    gen = oll.OllamaAdapter().chat_stream(make_call(upstream.base_url), {"messages": []})
    seen = []
    with pytest.raises(UpstreamError) as exc:
        for chunk in gen:
            seen.append(chunk)
    assert seen and exc.value.outcome == TRANSIENT


def test_chat_stream_truncated(upstream):
    upstream.route("POST", "/api/chat", 200, ndjson(STREAM_LINES[:2]))
    with pytest.raises(UpstreamError) as exc:
        list(oll.OllamaAdapter().chat_stream(make_call(upstream.base_url), {"messages": []}))
    assert exc.value.outcome == TRANSIENT


def test_chat_stream_model_not_found_raises_before_first_chunk(upstream):
    upstream.route("POST", "/api/chat", 404, {"error": "model 'nope' not found"})
    gen = oll.OllamaAdapter().chat_stream(make_call(upstream.base_url), {"messages": []})
    with pytest.raises(UpstreamError) as exc:
        next(gen)
    assert exc.value.outcome == CLIENT and exc.value.status == 404 and "not found" in exc.value.message


def test_chat_non_stream(upstream):
    upstream.route(
        "POST", "/api/chat", 200, {**STREAM_LINES[-1], "message": {"role": "assistant", "content": "Blue."}}
    )
    resp = oll.OllamaAdapter().chat(
        make_call(upstream.base_url), {"messages": [{"role": "user", "content": "x"}]}
    )
    assert resp["choices"][0]["message"]["content"] == "Blue."
    assert upstream.requests[0]["json"]["stream"] is False


@pytest.mark.parametrize(
    "status,outcome,client_status",
    [(400, CLIENT, 400), (404, CLIENT, 404), (500, TRANSIENT, 502), (503, TRANSIENT, 503)],
)
def test_chat_errors(upstream, status, outcome, client_status):
    upstream.route("POST", "/api/chat", status, {"error": "something"})
    with pytest.raises(UpstreamError) as exc:
        oll.OllamaAdapter().chat(make_call(upstream.base_url), {"messages": []})
    assert (exc.value.outcome, exc.value.status, exc.value.upstream_status) == (
        outcome,
        client_status,
        status,
    )


def test_connection_refused_is_transient():
    with pytest.raises(UpstreamError) as exc:
        oll.OllamaAdapter().chat(make_call("http://127.0.0.1:9"), {"messages": []})
    assert exc.value.outcome == TRANSIENT


def test_probe_and_embeddings(upstream):
    upstream.route(
        "GET", "/api/tags", 200, {"models": [{"name": "llama3.2:latest"}, {"name": "nomic-embed-text"}]}
    )
    upstream.route(
        "POST",
        "/api/embed",
        200,
        {"model": "nomic-embed-text", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 8},
    )
    adapter = oll.OllamaAdapter()
    call = make_call(upstream.base_url)
    adapter.probe(call)
    emb = adapter.embeddings(call, {"model": "alias", "input": ["a", "b"]})
    assert emb == {
        "object": "list",
        "model": "alias",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
        "data": [
            {"object": "embedding", "embedding": [0.1, 0.2], "index": 0},
            {"object": "embedding", "embedding": [0.3, 0.4], "index": 1},
        ],
    }
    assert upstream.requests[-1]["json"] == {"model": "llama3.2", "input": ["a", "b"]}
