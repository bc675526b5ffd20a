"""The mock upstream itself: each wire format against the recorded fixtures, and every scripting knob."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3

from tests.mock_upstream import (
    FIXTURES,
    MockProcess,
    MockUpstream,
    RemoteMock,
    delay,
    error,
    hang,
    hold,
    invalid_key,
    pace,
    replay,
    require_thought_signature,
    reset_after,
    thought_signature,
)

GEMINI_KEY = {"x-goog-api-key": "g-key-1"}
ANTHROPIC_HDRS = {"x-api-key": "a-key-1", "anthropic-version": "2023-06-01"}
USER = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
WEATHER_TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
            {"name": "time", "parameters": {"type": "object", "properties": {"days": {"type": "integer"}}}},
        ]
    }
]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(92)


@pytest.fixture(scope="module")
def server():
    with MockUpstream() as m:
        yield m


@pytest.fixture
def mock(server):
    server.clear()
    yield server
    server.clear()


def gemini(mock, model: str, method: str, body: dict, *, query: str = "", headers=None, **kw):
    return requests.post(
        f"{mock.url}/v1beta/models/{model}:{method}{query}",
        headers=GEMINI_KEY if headers is None else headers,
        json=body,
        **kw,
    )


def sse_events(raw: bytes) -> list[bytes]:
    return [e for e in re.split(rb"\r\n\r\n|\n\n", raw) if e.strip()]


def data_json(events: list[bytes]) -> list[dict]:
    out = []
    for e in events:
        for line in e.splitlines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


# -- Gemini ---------------------------------------------------------------------------------------------


def test_gemini_generate_echoes_last_user_text_with_consistent_usage(mock):
    r = gemini(mock, "gemini-2.5-flash", "generateContent", USER)
    assert r.status_code == 200
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "echo: hello there"}], "role": "model"}
    assert cand["finishReason"] == "STOP"
    u = body["usageMetadata"]
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"] > 0
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert gemini(mock, "gemini-2.5-flash", "generateContent", USER).json() == body  # deterministic

    by_query = requests.post(
        f"{mock.url}/v1beta/models/gemini-2.0-flash:generateContent?key=q-key", json=USER
    )
    assert by_query.status_code == 200
    call = mock.find(key="q-key")[0]
    assert (call["dialect"], call["model"], call["stream"]) == ("gemini", "gemini-2.0-flash", False)
    assert call["body"] == USER and call["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert mock.count(key="g-key-1", model="gemini-2.5-flash") == 2


def test_gemini_stream_uses_crlf_sse_framing_like_the_fixture(mock):
    fixture = (FIXTURES / "gemini-stream-text.sse").read_bytes()
    assert fixture.count(b"\r\n\r\n") == 3 and b"[DONE]" not in fixture  # what "like the fixture" means

    r = gemini(mock, "gemini-2.5-flash", "streamGenerateContent", USER, query="?alt=sse", stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Transfer-Encoding"] == "chunked"
    raw = r.raw.read()
    assert raw.endswith(b"\r\n\r\n") and b"[DONE]" not in raw
    events = raw.split(b"\r\n\r\n")[:-1]
    assert len(events) == 3
    assert all(e.startswith(b"data: {") and b"\n" not in e and b"\r" not in e for e in events)
    chunks = [json.loads(e[6:]) for e in events]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: hello there"
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]  # as in the fixture's first chunk
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert mock.calls[-1]["stream"] is True

    as_array = gemini(mock, "gemini-2.5-flash", "streamGenerateContent", USER).json()
    assert isinstance(as_array, list) and len(as_array) == 3


def test_gemini_tool_call_carries_signature_and_echo_is_recorded(mock):
    ask = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris"}]}], "tools": WEATHER_TOOLS}
    body = gemini(mock, "gemini-3-pro-preview", "generateContent", ask).json()
    parts = body["candidates"][0]["content"]["parts"]
    assert len(parts) == 1 and body["candidates"][0]["finishReason"] == "STOP"
    fc = parts[0]["functionCall"]
    assert fc == {"name": "weather", "args": {"location": "Paris"}}
    assert parts[0]["thoughtSignature"] == thought_signature("gemini-3-pro-preview", "weather", fc["args"])

    both = {
        "contents": [{"role": "user", "parts": [{"text": "parallel: weather and time"}]}],
        "tools": WEATHER_TOOLS,
    }
    parts = gemini(mock, "gemini-3-pro-preview", "generateContent", both).json()["candidates"][0]["content"][
        "parts"
    ]
    assert [p["functionCall"]["name"] for p in parts] == ["weather", "time"]
    assert all(p["thoughtSignature"] for p in parts)

    follow_up = {
        "tools": WEATHER_TOOLS,
        "contents": [
            ask["contents"][0],
            {"role": "model", "parts": [{"functionCall": fc, "thoughtSignature": parts_sig(fc)}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"temp": 21}}}]},
        ],
    }
    r = gemini(mock, "gemini-3-pro-preview", "generateContent", follow_up, headers={"x-goog-api-key": "sig"})
    text = r.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert "weather" in text and '"temp": 21' in text
    assert mock.find(key="sig")[0]["thought_signatures"] == [
        {"name": "weather", "signature": parts_sig(fc), "known": True}
    ]

    del follow_up["contents"][1]["parts"][0]["thoughtSignature"]
    gemini(mock, "gemini-3-pro-preview", "generateContent", follow_up, headers={"x-goog-api-key": "nosig"})
    assert mock.find(key="nosig")[0]["thought_signatures"] == [
        {"name": "weather", "signature": None, "known": False}
    ]
    mock.script(model="gemini-3-pro-preview", behaviour=require_thought_signature())
    r = gemini(mock, "gemini-3-pro-preview", "generateContent", follow_up)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def parts_sig(fc: dict) -> str:
    return thought_signature("gemini-3-pro-preview", fc["name"], fc["args"])


def test_gemini_streamed_function_call_arrives_whole_in_one_chunk(mock):
    ask = {"contents": [{"role": "user", "parts": [{"text": "Weather in Oslo"}]}], "tools": WEATHER_TOOLS}
    r = gemini(mock, "gemini-2.5-flash", "streamGenerateContent", ask, query="?alt=sse")
    chunks = data_json(sse_events(r.content))
    assert len(chunks) == 1
    part = chunks[0]["candidates"][0]["content"]["parts"][0]
    assert (
        part["functionCall"] == {"name": "weather", "args": {"location": "Oslo"}} and part["thoughtSignature"]
    )


def test_gemini_json_mode_image_and_thoughts(mock):
    ask = {
        "contents": [{"role": "user", "parts": [{"text": "list"}]}],
        "generationConfig": {"responseMimeType": "application/json"},
    }
    text = gemini(mock, "m", "generateContent", ask).json()["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text)["echo"] == "list"

    img = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "what is this"},
                    {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
                ],
            }
        ]
    }
    text = gemini(mock, "m", "generateContent", img).json()["candidates"][0]["content"]["parts"][0]["text"]
    assert "image/png" in text and f"{len(PNG)} bytes" in text

    think = {**USER, "generationConfig": {"thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True}}}
    body = gemini(mock, "m", "generateContent", think).json()
    parts, u = body["candidates"][0]["content"]["parts"], body["usageMetadata"]
    assert parts[0]["thought"] is True and parts[1] == {"text": "echo: hello there"}
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"] + u["thoughtsTokenCount"]


def test_gemini_embeddings_are_deterministic(mock):
    one = {"content": {"parts": [{"text": "alpha"}]}}
    v1 = gemini(mock, "gemini-embedding-001", "embedContent", one).json()["embedding"]["values"]
    assert len(v1) == 8 and all(-1 <= x <= 1 for x in v1)
    assert gemini(mock, "gemini-embedding-001", "embedContent", one).json()["embedding"]["values"] == v1
    batch = {
        "requests": [
            {"model": "models/gemini-embedding-001", **one},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "beta"}]}},
        ]
    }
    embs = gemini(mock, "gemini-embedding-001", "batchEmbedContents", batch).json()["embeddings"]
    assert embs[0]["values"] == v1 and embs[1]["values"] != v1
    too_many = {"requests": batch["requests"][:1] * 101}
    r = gemini(mock, "gemini-embedding-001", "batchEmbedContents", too_many)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_models_paginate(mock):
    names, token, pages = [], None, 0
    while True:
        params = {"pageSize": 2, **({"pageToken": token} if token else {})}
        body = requests.get(f"{mock.url}/v1beta/models", params=params, headers=GEMINI_KEY).json()
        pages += 1
        assert len(body["models"]) <= 2
        names += [m["name"] for m in body["models"]]
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages > 1 and len(names) == len(set(names)) and "models/gemini-2.5-flash" in names
    full = requests.get(f"{mock.url}/v1beta/models", headers=GEMINI_KEY).json()
    assert "nextPageToken" not in full and [m["name"] for m in full["models"]] == names
    methods = {m["name"]: m["supportedGenerationMethods"] for m in full["models"]}
    assert "generateContent" in methods["models/gemini-2.5-flash"]
    assert methods["models/gemini-embedding-001"][0] == "embedContent"


def test_gemini_errors_are_the_recorded_bodies(mock):
    mock.script(key="bad", behaviour=invalid_key())
    r = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "bad"})
    assert r.status_code == 400 and r.json() == fixture_json("gemini-error-400-api-key-invalid.json")

    mock.script(key="busy", behaviour=error(429, retry_delay="2s"))
    r = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "busy"})
    expected = fixture_json("gemini-error-429-resource-exhausted.json")
    expected["error"]["details"][1]["retryDelay"] = "2s"
    assert r.status_code == 429 and r.json() == expected

    mock.script(key="plain429", behaviour=error(429))
    r = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "plain429"})
    assert r.json() == fixture_json("gemini-error-429-resource-exhausted.json")  # retryDelay "34.4s"

    mock.script(key="off", behaviour=error(403))
    r = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "off"})
    assert r.status_code == 403 and r.json() == fixture_json("gemini-error-403-permission-denied.json")

    for status, name in ((404, "NOT_FOUND"), (500, "INTERNAL"), (503, "UNAVAILABLE")):
        mock.script(key=f"k{status}", behaviour=error(status))
        r = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": f"k{status}"})
        err = r.json()["error"]
        assert (r.status_code, err["code"], err["status"]) == (status, status, name) and err["message"]

    r = gemini(mock, "m", "generateContent", USER, headers={})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"


def test_replay_sends_a_fixture_verbatim(mock):
    mock.script(key="blocked", behaviour=replay("gemini-stream-prompt-blocked.sse"))
    r = gemini(
        mock, "m", "streamGenerateContent", USER, query="?alt=sse", headers={"x-goog-api-key": "blocked"}
    )
    assert r.content == (FIXTURES / "gemini-stream-prompt-blocked.sse").read_bytes()


# -- OpenAI-compatible ----------------------------------------------------------------------------------

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "GetWeatherArgs",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "units": {"enum": ["c", "f"]}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}},
        },
    },
]


def openai_chat(mock, body: dict, key: str = "o-key-1", **kw):
    return requests.post(
        f"{mock.url}/v1/chat/completions",
        json={"model": "gpt-4o", **body},
        headers={"Authorization": f"Bearer {key}"},
        **kw,
    )


def test_openai_chat_non_stream_and_stream_with_usage(mock):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    body = openai_chat(mock, {"messages": msgs}).json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["content"] == "echo: hi there" and choice["finish_reason"] == "stop"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]

    r = openai_chat(mock, {"messages": msgs, "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["Transfer-Encoding"] == "chunked"
    events = sse_events(r.content)
    assert (
        events[-1] == b"data: [DONE]" and r.content.endswith(b"data: [DONE]\n\n") and b"\r" not in r.content
    )
    chunks = data_json(events)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "echo: hi there"
    )
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == u["total_tokens"]
    assert len({c["id"] for c in chunks}) == 1

    no_usage = data_json(sse_events(openai_chat(mock, {"messages": msgs, "stream": True}).content))
    assert all(c["choices"] for c in no_usage)


def test_openai_parallel_tool_calls_shaped_like_the_fixture(mock):
    def shape(chunks):  # per tool-call delta: which keys it carries
        return [
            sorted(tc)
            for c in chunks
            if c["choices"]
            for tc in c["choices"][0]["delta"].get("tool_calls", [])
        ]

    fixture = data_json(sse_events((FIXTURES / "openai-stream-parallel-tool-calls.sse").read_bytes()))
    msgs = [{"role": "user", "content": "parallel please: weather in London and AAPL"}]
    chunks = data_json(
        sse_events(
            openai_chat(
                mock,
                {
                    "messages": msgs,
                    "tools": OPENAI_TOOLS,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ).content
        )
    )
    for got in (fixture, chunks):
        assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
        assert got[-2]["choices"][0]["finish_reason"] == "tool_calls" and got[-1]["choices"] == []
        kinds = shape(got)
        assert kinds[0] == ["function", "id", "index", "type"] and ["function", "index"] in kinds

    calls: dict[int, dict] = {}
    for c in chunks[1:-2]:
        for tc in c["choices"][0]["delta"]["tool_calls"]:
            slot = calls.setdefault(tc["index"], {"name": None, "args": ""})
            if "id" in tc:
                assert tc["function"]["arguments"] == "" and tc["id"].startswith("call_")
                slot["name"] = tc["function"]["name"]
            slot["args"] += tc["function"]["arguments"]
    assert calls[0]["name"] == "GetWeatherArgs" and json.loads(calls[0]["args"]) == {
        "city": "AAPL",
        "units": "c",
    }
    assert calls[1]["name"] == "get_stock_price" and json.loads(calls[1]["args"]) == {"ticker": "AAPL"}

    one = openai_chat(
        mock, {"messages": [{"role": "user", "content": "weather Rome"}], "tools": OPENAI_TOOLS}
    ).json()
    msg = one["choices"][0]["message"]
    assert one["choices"][0]["finish_reason"] == "tool_calls" and msg["content"] is None
    assert [tc["function"]["name"] for tc in msg["tool_calls"]] == ["GetWeatherArgs"]
    tc = msg["tool_calls"][0]
    after = openai_chat(
        mock,
        {
            "tools": OPENAI_TOOLS,
            "messages": [
                {"role": "user", "content": "weather Rome"},
                msg,
                {"role": "tool", "tool_call_id": tc["id"], "content": "sunny"},
            ],
        },
    ).json()
    assert after["choices"][0]["message"]["content"] == "echo: function GetWeatherArgs returned sunny"


def test_openai_embeddings_models_and_auth(mock):
    auth = {"Authorization": "Bearer o-key-1"}
    r = requests.post(
        f"{mock.url}/v1/embeddings",
        headers=auth,
        json={"model": "text-embedding-3-small", "input": ["a", "b"]},
    ).json()
    assert [d["index"] for d in r["data"]] == [0, 1] and len(r["data"][0]["embedding"]) == 8
    models = requests.get(f"{mock.url}/v1/models", headers=auth).json()
    assert models["object"] == "list" and {"id", "object", "owned_by"} <= set(models["data"][0])

    r = requests.post(f"{mock.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    mock.script(key="o-bad", behaviour=invalid_key())
    r = openai_chat(mock, {"messages": [{"role": "user", "content": "x"}]}, key="o-bad")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    mock.script(key="o-busy", behaviour=error(429, headers={"retry-after": "3"}))
    r = openai_chat(mock, {"messages": [{"role": "user", "content": "x"}]}, key="o-busy")
    assert (r.status_code, r.headers["retry-after"], r.json()["error"]["code"]) == (
        429,
        "3",
        "rate_limit_exceeded",
    )


# -- Anthropic ------------------------------------------------------------------------------------------


def collapsed_event_names(raw: bytes) -> list[str]:
    names = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in sse_events(raw)]
    return [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]


def test_anthropic_stream_has_the_fixture_event_sequence(mock):
    tools = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    req = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 100,
        "stream": True,
        "tools": tools,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
    }
    r = requests.post(f"{mock.url}/v1/messages", headers=ANTHROPIC_HDRS, json=req)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    fixture = (FIXTURES / "anthropic-stream-tool-use.sse").read_bytes()
    assert collapsed_event_names(r.content) == collapsed_event_names(fixture)
    assert b'data: {"type": "ping"}' in r.content
    events = data_json(sse_events(r.content))
    assert events[0]["message"]["content"] == [] and events[0]["message"]["usage"]["output_tokens"] == 1
    tool_start = next(e for e in events if e["type"] == "content_block_start" and e["index"] == 1)
    assert tool_start["content_block"]["input"] == {} and tool_start["content_block"]["id"].startswith(
        "toolu_"
    )
    partial = [
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1
    ]
    assert partial[0] == "" and json.loads("".join(partial)) == {"location": "Paris"}
    delta = next(e for e in events if e["type"] == "message_delta")
    assert (
        delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
        and delta["usage"]["output_tokens"]
    )

    plain = {**req, "stream": False, "tools": None, "messages": [{"role": "user", "content": "hi"}]}
    body = requests.post(f"{mock.url}/v1/messages", headers=ANTHROPIC_HDRS, json=plain).json()
    assert body["content"] == [{"type": "text", "text": "echo: hi"}] and body["stop_reason"] == "end_turn"
    assert mock.calls[-1]["key"] == "a-key-1" and mock.calls[-1]["dialect"] == "anthropic"


def test_anthropic_errors_use_its_envelope(mock):
    req = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    url = f"{mock.url}/v1/messages"
    mock.script(key="a-429", behaviour=error(429))
    r = requests.post(url, headers={**ANTHROPIC_HDRS, "x-api-key": "a-429"}, json=req)
    assert r.status_code == 429 and r.headers["retry-after"] and r.headers["request-id"].startswith("req_")
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
    mock.script(key="a-529", behaviour=error(529))
    r = requests.post(url, headers={**ANTHROPIC_HDRS, "x-api-key": "a-529"}, json=req)
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    mock.script(key="a-bad", behaviour=invalid_key())
    r = requests.post(url, headers={**ANTHROPIC_HDRS, "x-api-key": "a-bad"}, json=req)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = requests.post(url, headers={"x-api-key": "a-key-1"}, json=req)
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
    r = requests.post(url, headers=ANTHROPIC_HDRS, json={"model": "claude", "messages": []})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


# -- Ollama ---------------------------------------------------------------------------------------------


def test_ollama_chat_ndjson_and_tags(mock):
    req = {"model": "llama3.2", "messages": [{"role": "user", "content": "hello there"}]}
    r = requests.post(f"{mock.url}/api/chat", json=req)
    assert r.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.content.splitlines()]
    assert all(not x["done"] for x in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(x["message"]["content"] for x in lines) == "echo: hello there"
    last = lines[-1]
    assert last["done_reason"] == "stop" and last["prompt_eval_count"] > 0 and last["eval_count"] > 0

    one = requests.post(f"{mock.url}/api/chat", json={**req, "stream": False}).json()
    assert one["done"] is True and one["message"]["content"] == "echo: hello there"
    tags = requests.get(f"{mock.url}/api/tags").json()
    assert tags["models"][0]["name"] and mock.calls[-1]["key"] is None and mock.count(dialect="ollama") == 3


# -- scripting ------------------------------------------------------------------------------------------


def test_error_times_then_recovers_and_key_and_model_matching(mock):
    mock.script(key="k1", behaviour=error(503), times=2)
    mock.script(model="gemini-2.5-pro", behaviour=error(500))
    codes = [
        gemini(
            mock, "gemini-2.5-flash", "generateContent", USER, headers={"x-goog-api-key": "k1"}
        ).status_code
        for _ in range(3)
    ]
    assert codes == [503, 503, 200]
    assert gemini(mock, "gemini-2.5-flash", "generateContent", USER, headers={"x-goog-api-key": "k2"}).ok
    assert gemini(mock, "gemini-2.5-pro", "generateContent", USER).status_code == 500
    assert mock.count(key="k1") == 3 and mock.count(model="gemini-2.5-pro") == 1
    assert [c["status"] for c in mock.find(key="k1")] == [503, 503, 200]


def test_delay_and_pace(mock):
    mock.script(key="slow", behaviour=delay(0.3))
    t0 = time.monotonic()
    assert gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "slow"}).ok
    assert time.monotonic() - t0 >= 0.3

    mock.script(key="paced", behaviour=pace(chunks=5, delay=0.05))
    t0 = time.monotonic()
    r = gemini(
        mock, "m", "streamGenerateContent", USER, query="?alt=sse", headers={"x-goog-api-key": "paced"}
    )
    assert len(sse_events(r.content)) == 5 and time.monotonic() - t0 >= 0.2


def test_hold_proves_first_chunk_arrives_while_the_second_is_pending(mock):
    gate = threading.Event()
    mock.script(key="held", behaviour=hold(gate))
    r = gemini(
        mock,
        "m",
        "streamGenerateContent",
        USER,
        query="?alt=sse",
        headers={"x-goog-api-key": "held"},
        stream=True,
        timeout=5,
    )
    pieces = r.iter_content(chunk_size=None)
    first = next(pieces)
    assert first.startswith(b"data: ") and first.endswith(b"\r\n\r\n") and b"STOP" not in first
    released_at = time.monotonic() + 0.3
    threading.Timer(0.3, gate.set).start()
    rest = b"".join(pieces)
    assert time.monotonic() >= released_at - 0.01
    assert len(sse_events(first + rest)) == 3 and b'"finishReason": "STOP"' in rest


def test_hold_by_name_over_http_control(mock):
    remote = RemoteMock(mock.url)
    remote.script(key="gate", behaviour=hold("g1") + pace(chunks=2))
    r = gemini(
        mock,
        "m",
        "streamGenerateContent",
        USER,
        query="?alt=sse",
        headers={"x-goog-api-key": "gate"},
        stream=True,
        timeout=5,
    )
    pieces = r.iter_content(chunk_size=None)
    assert next(pieces).startswith(b"data: ")
    remote.release("g1")
    assert b"STOP" in b"".join(pieces)


@pytest.mark.parametrize("dialect", ["gemini", "openai", "anthropic", "ollama"])
def test_reset_after_breaks_the_stream_without_a_clean_end(mock, dialect):
    key = f"reset-{dialect}"
    mock.script(key=key if dialect != "ollama" else None, dialect=dialect, behaviour=reset_after(1))
    if dialect == "gemini":
        r = gemini(
            mock,
            "m",
            "streamGenerateContent",
            USER,
            query="?alt=sse",
            headers={"x-goog-api-key": key},
            stream=True,
        )
    elif dialect == "openai":
        r = openai_chat(
            mock, {"messages": [{"role": "user", "content": "hi"}], "stream": True}, key=key, stream=True
        )
    elif dialect == "anthropic":
        r = requests.post(
            f"{mock.url}/v1/messages",
            headers={**ANTHROPIC_HDRS, "x-api-key": key},
            stream=True,
            json={
                "model": "c",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    else:
        r = requests.post(f"{mock.url}/api/chat", json={"model": "l", "messages": []}, stream=True)
    assert r.status_code == 200
    got = b""
    with pytest.raises(requests.exceptions.RequestException):
        for piece in r.iter_content(chunk_size=None):
            got += piece
    assert got and b"[DONE]" not in got and b"message_stop" not in got and b'"done":true' not in got


def test_reset_before_any_response_and_hang(mock):
    mock.script(key="drop", behaviour=reset_after(0))
    with pytest.raises(requests.exceptions.ConnectionError):
        gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "drop"})
    mock.script(key="stuck", behaviour=hang(5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "stuck"}, timeout=0.3)
    assert mock.count(key="stuck") == 1 and mock.find(key="stuck")[0]["status"] is None


def test_stop_releases_hanging_requests_quickly():
    m = MockUpstream().start()
    m.script(behaviour=hang(30))
    errors: list[Exception] = []

    def call():
        try:
            requests.post(
                f"{m.url}/v1beta/models/m:generateContent", headers=GEMINI_KEY, json=USER, timeout=10
            )
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    m.wait_for_calls(1, timeout=2)
    t0 = time.monotonic()
    m.stop()
    t.join(timeout=5)
    assert not t.is_alive() and time.monotonic() - t0 < 3 and len(errors) == 1


def test_calls_recording_is_thread_safe_and_keeps_connections_alive(mock):
    pool = urllib3.PoolManager(maxsize=4, block=True)
    url = f"{mock.url}/v1beta/models/gemini-2.5-flash:generateContent"

    def call(i: int) -> int:
        return pool.request("POST", url, json=USER, headers={"x-goog-api-key": f"t{i % 4}"}).status

    with ThreadPoolExecutor(8) as ex:
        assert set(ex.map(call, range(40))) == {200}
    assert mock.count(dialect="gemini") == 40 and mock.count(key="t1") == 10
    assert sorted(c["id"] for c in mock.calls) == sorted({c["id"] for c in mock.calls})
    assert {"dialect", "path", "model", "key", "stream", "body", "time"} <= set(mock.calls[0])
    assert pool.connection_from_url(mock.url).num_connections <= 4  # 40 calls, reused via keep-alive


def test_http_control_endpoints(mock):
    mock.script(key="x", behaviour=error(500))
    r = requests.post(
        f"{mock.url}/_mock/script",
        json={"key": "ctl", "times": 1, "behaviour": {"status": 429, "retry_delay": "5s"}},
    )
    assert r.ok
    first = gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "ctl"})
    assert first.status_code == 429 and first.json()["error"]["details"][1]["retryDelay"] == "5s"
    assert gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "ctl"}).ok
    calls = requests.get(f"{mock.url}/_mock/calls", params={"key": "ctl"}).json()["calls"]
    assert [c["status"] for c in calls] == [429, 200]
    assert requests.post(f"{mock.url}/_mock/script", json={"behaviour": {"nope": 1}}).status_code == 400
    assert requests.post(f"{mock.url}/_mock/clear").ok
    assert requests.get(f"{mock.url}/_mock/calls").json()["calls"] == []
    assert gemini(mock, "m", "generateContent", USER, headers={"x-goog-api-key": "x"}).ok  # rules cleared


def test_standalone_process_with_gevent():
    with MockProcess() as proc:
        remote = proc.remote
        assert remote.health()
        remote.script(key="pk", behaviour=error(503), times=1)
        url = f"{proc.url}/v1/chat/completions"
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

        def call(i: int) -> int:
            return requests.post(
                url, json=body, headers={"Authorization": f"Bearer k{i}"}, timeout=5
            ).status_code

        assert requests.post(url, json=body, headers={"Authorization": "Bearer pk"}).status_code == 503
        with ThreadPoolExecutor(20) as ex:
            assert set(ex.map(call, range(40))) == {200}
        assert remote.count(dialect="openai") == 41
