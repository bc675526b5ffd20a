"""Anthropic upstream adapter: translation, error classification and I/O against a local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from proxy.errors import AUTH, CLIENT, QUOTA, TRANSIENT, UpstreamError
from proxy.providers import anthropic as ant
from proxy.providers.base import Call, Timeouts
from proxy.providers.http import iter_sse_data

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
KEY = "sk-ant-secret-key-123"


def fixture_events() -> list[tuple[str, dict]]:
    raw = (FIXTURES / "anthropic-stream-tool-use.sse").read_bytes()
    return [(event, json.loads(data)) for event, data in iter_sse_data(iter(raw.splitlines()))]


def collect(chunks: list[dict]) -> dict:
    """Rebuild what an OpenAI client would see from a list of chunks."""
    out: dict = {"roles": [], "text": "", "tools": {}, "finish": [], "usage": None, "first_tool_deltas": []}
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if "role" in delta:
                out["roles"].append(delta["role"])
            out["text"] += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                if tc["index"] not in out["tools"]:
                    out["first_tool_deltas"].append(tc)
                    out["tools"][tc["index"]] = {
                        "id": tc.get("id"),
                        "name": tc["function"].get("name"),
                        "arguments": "",
                    }
                out["tools"][tc["index"]]["arguments"] += tc["function"].get("arguments") or ""
            if choice["finish_reason"]:
                out["finish"].append(choice["finish_reason"])
    return out


# ---------------------------------------------------------------- a tiny real upstream


class Upstream:
    """Routes (method, path) -> (status, headers, body chunks); records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, dict, list[bytes]]] = {}
        self.requests: list[dict] = []

    def route(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: bytes | dict | list = b"",
        headers: dict | None = None,
    ) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        chunks = body if isinstance(body, list) else [body]
        self.routes[(method, path)] = (status, headers or {}, chunks)


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
            status, headers, chunks = state.routes.get(
                (self.command, self.path.split("?")[0]), (404, {}, [b'{"error":"no route"}'])
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            for piece in chunks:
                self.wfile.write(piece)
                self.wfile.flush()

        do_GET = do_POST = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def make_call(base_url: str, model: str = "claude-sonnet-4-20250514") -> Call:
    return Call(base_url=base_url, model=model, key=KEY, timeouts=Timeouts(connect=2, first_byte=5, idle=5))


def sse_bytes(events: list[tuple[str, dict]]) -> bytes:
    return b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)


# ---------------------------------------------------------------- stream translation (recorded fixture)


def test_fixture_stream_translates_to_openai_chunks():
    tr = ant.AnthropicStreamTranslator("my-alias", include_usage=True)
    chunks = [c for event, data in fixture_events() for c in tr.feed(event, data)]
    got = collect(chunks)
    assert tr.done
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert got["roles"] == ["assistant"]
    assert got["text"] == "I'll check the current weather in Paris for you."
    assert list(got["tools"]) == [0]
    tool = got["tools"][0]
    assert tool["id"] == "toolu_01NRLabsLyVHZPKxbKvkfSMn" and tool["name"] == "get_weather"
    assert json.loads(tool["arguments"]) == {"location": "Paris"}
    first = got["first_tool_deltas"][0]
    assert first["type"] == "function" and first["function"] == {"name": "get_weather", "arguments": ""}
    assert got["finish"] == ["tool_calls"]
    assert got["usage"] == {"prompt_tokens": 377, "completion_tokens": 65, "total_tokens": 442}
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["id"] for c in chunks} == {"msg_019Q1hrJbZG26Fb9BQhrkHEr"}
    assert {c["model"] for c in chunks} == {"my-alias"}


def test_fixture_stream_without_include_usage_has_no_usage_chunk():
    tr = ant.AnthropicStreamTranslator("m")
    chunks = [c for event, data in fixture_events() for c in tr.feed(event, data)]
    assert all(c["choices"] for c in chunks)


def test_cache_tokens_count_as_prompt_tokens():
    tr = ant.AnthropicStreamTranslator("m", include_usage=True)
    tr.feed(
        "message_start",
        {
            "message": {
                "id": "msg_1",
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 5,
                    "output_tokens": 1,
                },
            }
        },
    )
    tr.feed("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}})
    usage = tr.feed("message_stop", {})[-1]["usage"]
    assert usage == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_thinking_blocks_are_not_leaked_in_stream():
    tr = ant.AnthropicStreamTranslator("m")
    out = tr.feed("message_start", {"message": {"id": "msg_1", "usage": {}}})
    out += tr.feed("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    out += tr.feed(
        "content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}
    )
    out += tr.feed(
        "content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "x"}}
    )
    assert len(out) == 1  # only the role chunk
    assert "hmm" not in json.dumps(out)


@pytest.mark.parametrize(
    "kind,outcome,status",
    [("overloaded_error", TRANSIENT, 503), ("api_error", TRANSIENT, 502), ("rate_limit_error", QUOTA, 429)],
)
def test_error_event_mid_stream_raises(kind, outcome, status):
    tr = ant.AnthropicStreamTranslator("m")
    tr.feed("message_start", {"message": {"id": "msg_1", "usage": {}}})
    with pytest.raises(UpstreamError) as exc:
        tr.feed("error", {"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    assert exc.value.outcome == outcome and exc.value.status == status


# ---------------------------------------------------------------- request translation


def test_request_system_messages_and_max_tokens_default():
    body = ant.to_anthropic_request(
        {
            "model": "alias",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
                {"role": "user", "content": "Hi"},
            ],
        },
        "claude-x",
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": ant.DEFAULT_MAX_TOKENS,
        "system": "Be terse.\n\nNo emojis.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


def test_request_sampling_stop_and_max_tokens():
    body = ant.to_anthropic_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 77,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "u1",
        },
        "m",
    )
    assert body["max_tokens"] == 77 and body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u1"}
    body = ant.to_anthropic_request(
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 9, "stop": ["a", "b"]}, "m"
    )
    assert body["max_tokens"] == 9 and body["stop_sequences"] == ["a", "b"]


def test_request_images():
    body = ant.to_anthropic_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        },
        "m",
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_request_tools_and_tool_history():
    req = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "20C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
    }
    body = ant.to_anthropic_request(req, "m")
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # both tool results and the following user text merged into one user turn, results first
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "20C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
        {"type": "text", "text": "Thanks"},
    ]


@pytest.mark.parametrize(
    "choice,parallel,expected",
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_request_tool_choice(choice, parallel, expected):
    req = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": choice,
    }
    if parallel is not None:
        req["parallel_tool_calls"] = parallel
    body = ant.to_anthropic_request(req, "m")
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_request_without_tools_has_no_tool_choice():
    body = ant.to_anthropic_request(
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}, "m"
    )
    assert "tool_choice" not in body and "tools" not in body


def test_request_merges_consecutive_same_role_turns_and_skips_empty_text():
    body = ant.to_anthropic_request(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "c"},
            ]
        },
        "m",
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


@pytest.mark.parametrize(
    "msg",
    [
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}],
        },
        {"role": "function", "content": "x"},
    ],
)
def test_request_rejects_untranslatable_input_as_client_error(msg):
    with pytest.raises(UpstreamError) as exc:
        ant.to_anthropic_request({"messages": [msg]}, "m")
    assert exc.value.outcome == CLIENT and exc.value.status == 400


# ---------------------------------------------------------------- response translation


def test_response_text_tool_use_and_thinking_dropped():
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "secret plan", "signature": "s"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 12, "output_tokens": 30},
    }
    resp = ant.from_anthropic_response(body, "alias")
    assert resp["object"] == "chat.completion" and resp["model"] == "alias" and resp["id"] == "msg_1"
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        }
    ]
    assert "secret plan" not in json.dumps(resp)
    assert resp["usage"] == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}


def test_response_tool_only_has_null_content():
    body = {
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    msg = ant.from_anthropic_response(body, "m")["choices"][0]["message"]
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    "stop,finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_response_stop_reason_mapping(stop, finish):
    body = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
    assert ant.from_anthropic_response(body, "m")["choices"][0]["finish_reason"] == finish


def test_response_cache_usage_details():
    body = {
        "content": [],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 0,
        },
    }
    assert ant.from_anthropic_response(body, "m")["usage"] == {
        "prompt_tokens": 53,
        "completion_tokens": 4,
        "total_tokens": 57,
        "prompt_tokens_details": {"cached_tokens": 50},
    }


# ---------------------------------------------------------------- error classification


def err_body(kind: str, message: str = "boom") -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}
    ).encode()


@pytest.mark.parametrize(
    "status,kind,outcome,client_status",
    [
        (401, "authentication_error", AUTH, 401),
        (403, "permission_error", AUTH, 403),
        (429, "rate_limit_error", QUOTA, 429),
        (529, "overloaded_error", TRANSIENT, 503),
        (500, "api_error", TRANSIENT, 502),
        (504, "timeout_error", TRANSIENT, 504),
        (408, "timeout_error", TRANSIENT, 504),
        (400, "invalid_request_error", CLIENT, 400),
        (404, "not_found_error", CLIENT, 404),
        (413, "request_too_large", CLIENT, 413),
    ],
)
def test_classify_error(status, kind, outcome, client_status):
    err = ant.classify_error(status, err_body(kind), {})
    assert (err.outcome, err.status, err.upstream_status) == (outcome, client_status, status)
    assert kind in err.message


def test_classify_429_reads_retry_after_case_insensitively():
    err = ant.classify_error(429, err_body("rate_limit_error"), {"Retry-After": "17"})
    assert err.retry_after == 17.0
    assert ant.classify_error(429, b"", {}).retry_after is None


def test_classify_credit_balance_is_a_key_quota_problem():
    err = ant.classify_error(
        400, err_body("invalid_request_error", "Your credit balance is too low to access")
    )
    assert err.outcome == QUOTA and err.daily


def test_classify_scrubs_key_and_survives_garbage():
    err = ant.classify_error(401, err_body("authentication_error", f"bad key {KEY}"), {}, secret=KEY)
    assert KEY not in err.message and KEY not in str(err)
    err = ant.classify_error(502, b"<html>bad gateway</html>", {})
    assert err.outcome == TRANSIENT and err.status == 502


# ---------------------------------------------------------------- I/O against a local server


def test_chat_stream_over_http(upstream):
    raw = (FIXTURES / "anthropic-stream-tool-use.sse").read_bytes()
    pieces = [raw[i : i + 97] for i in range(0, len(raw), 97)]  # split mid-line to exercise buffering
    upstream.route("POST", "/v1/messages", 200, pieces, {"content-type": "text/event-stream"})
    req = {
        "model": "alias",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    gen = ant.AnthropicAdapter().chat_stream(make_call(upstream.base_url), req)
    assert upstream.requests == []  # nothing is sent before the first next()
    got = collect(list(gen))
    assert got["text"] == "I'll check the current weather in Paris for you."
    assert json.loads(got["tools"][0]["arguments"]) == {"location": "Paris"}
    assert got["finish"] == ["tool_calls"] and got["usage"]["total_tokens"] == 442
    sent = upstream.requests[0]
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["json"]["stream"] is True and sent["json"]["model"] == "claude-sonnet-4-20250514"
    assert "stream_options" not in sent["json"]


def test_chat_stream_error_status_raises_before_first_chunk(upstream):
    upstream.route(
        "POST", "/v1/messages", 429, err_body("rate_limit_error", "slow down"), {"retry-after": "7"}
    )
    gen = ant.AnthropicAdapter().chat_stream(
        make_call(upstream.base_url), {"messages": [{"role": "user", "content": "x"}]}
    )
    with pytest.raises(UpstreamError) as exc:
        next(gen)
    assert exc.value.outcome == QUOTA and exc.value.retry_after == 7.0
    assert KEY not in str(exc.value)


def test_chat_stream_mid_stream_error_event(upstream):
    events = fixture_events()[:4] + [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    ]
    upstream.route("POST", "/v1/messages", 200, sse_bytes(events))
    gen = ant.AnthropicAdapter().chat_stream(
        make_call(upstream.base_url), {"messages": [{"role": "user", "content": "x"}]}
    )
    seen = []
    with pytest.raises(UpstreamError) as exc:
        for chunk in gen:
            seen.append(chunk)
    assert seen and exc.value.outcome == TRANSIENT


def test_chat_stream_truncated_is_transient(upstream):
    upstream.route("POST", "/v1/messages", 200, sse_bytes(fixture_events()[:5]))
    gen = ant.AnthropicAdapter().chat_stream(
        make_call(upstream.base_url), {"messages": [{"role": "user", "content": "x"}]}
    )
    with pytest.raises(UpstreamError) as exc:
        list(gen)
    assert exc.value.outcome == TRANSIENT


def test_chat_non_stream(upstream):
    upstream.route(
        "POST",
        "/v1/messages",
        200,
        {
            "id": "msg_9",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [{"type": "text", "text": "Hello!"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 2},
        },
    )
    resp = ant.AnthropicAdapter().chat(
        make_call(upstream.base_url), {"model": "alias", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert resp["choices"][0]["message"]["content"] == "Hello!" and resp["model"] == "alias"
    assert upstream.requests[0]["json"]["max_tokens"] == ant.DEFAULT_MAX_TOKENS
    assert "stream" not in upstream.requests[0]["json"]


def test_chat_auth_error(upstream):
    upstream.route("POST", "/v1/messages", 401, err_body("authentication_error", "invalid x-api-key"))
    with pytest.raises(UpstreamError) as exc:
        ant.AnthropicAdapter().chat(
            make_call(upstream.base_url), {"messages": [{"role": "user", "content": "x"}]}
        )
    assert exc.value.outcome == AUTH and exc.value.status == 401


def test_connection_refused_is_transient():
    with pytest.raises(UpstreamError) as exc:
        ant.AnthropicAdapter().chat(
            make_call("http://127.0.0.1:9/v1"), {"messages": [{"role": "user", "content": "x"}]}
        )
    assert exc.value.outcome == TRANSIENT


def test_probe(upstream):
    upstream.route(
        "GET",
        "/v1/models",
        200,
        {"data": [{"id": "claude-a"}, {"id": "claude-b"}], "has_more": False, "last_id": "claude-b"},
    )
    adapter = ant.AnthropicAdapter()
    adapter.probe(make_call(upstream.base_url))
    assert upstream.requests[-1]["path"] == "/v1/models?limit=1"
    assert upstream.requests[-1]["headers"]["x-api-key"] == KEY
    upstream.route("GET", "/v1/models", 401, err_body("authentication_error"))
    with pytest.raises(UpstreamError) as exc:
        adapter.probe(make_call(upstream.base_url))
    assert exc.value.outcome == AUTH


def test_embeddings_not_supported():
    with pytest.raises(UpstreamError) as exc:
        ant.AnthropicAdapter().embeddings(make_call("http://127.0.0.1:9"), {"input": "x"})
    assert exc.value.outcome == CLIENT and exc.value.status == 400


# ---------------------------------------------------------------- pass-through


def test_passthrough_renames_model_both_ways(upstream):
    upstream.route(
        "POST",
        "/v1/messages",
        200,
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "kept"}],
        },
    )
    body = {
        "model": "alias",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    resp = ant.messages_passthrough(make_call(upstream.base_url, "claude-x"), body)
    assert resp["model"] == "alias" and resp["content"][0]["thinking"] == "kept"
    assert upstream.requests[0]["json"] == {**body, "model": "claude-x"}


def test_passthrough_stream_yields_events_unchanged(upstream):
    events = fixture_events()
    upstream.route("POST", "/v1/messages", 200, sse_bytes(events))
    out = list(
        ant.messages_passthrough_stream(
            make_call(upstream.base_url), {"model": "alias", "max_tokens": 10, "messages": []}
        )
    )
    assert [e for e, _ in out] == [e for e, _ in events]
    assert out[0][1]["message"]["model"] == "alias"
    assert out[1:] == events[1:]
    assert upstream.requests[0]["json"]["stream"] is True


def test_passthrough_stream_error_event_raises(upstream):
    events = fixture_events()[:2] + [
        ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}})
    ]
    upstream.route("POST", "/v1/messages", 200, sse_bytes(events))
    gen = ant.messages_passthrough_stream(make_call(upstream.base_url), {"model": "a", "messages": []})
    assert next(gen)[0] == "message_start"
    next(gen)
    with pytest.raises(UpstreamError) as exc:
        next(gen)
    assert exc.value.outcome == QUOTA
