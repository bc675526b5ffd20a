"""Issue 11 item 4: generated request bodies (valid shapes, with wrong types and values injected at every
level) through the in-process app, with every provider type configured so the adapters really run.

Whatever the body, the answer is never a 5xx and is always a JSON envelope in the client's dialect (an
SSE stream for successful stream requests, whose error events are JSON in the same dialect).
"""
from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.config import parse_config
from tests.harness import open_by_default

# CI: 1200 bodies per test, the same ones every run (about 35 s in all). To explore further by hand:
# KEYRELAY_FUZZ_EXAMPLES=6000 KEYRELAY_FUZZ_SEED=7 pytest tests/integration/test_fuzz_requests.py
EXAMPLES = int(os.environ.get("KEYRELAY_FUZZ_EXAMPLES", "2000"))
SEED = os.environ.get("KEYRELAY_FUZZ_SEED")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))

CLAUDE = "claude-sonnet-4-20250514"
CHAT_MODELS = ["mock", "gem", "oai", "claude", "llama"]
EMBED_MODELS = ["mock", "gem-embed", "oai-embed", "llama-embed", "claude"]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SERVER_ERROR_TYPES = {"server_error", "api_error", "overloaded_error"}


@pytest.fixture(scope="module")
def client(tmp_path_factory, mock):
    config = {
        "server": {"database": str(tmp_path_factory.mktemp("fuzz") / "keyrelay.db"), "log_level": "error"},
        "retry": {"attempts": 1},
        "key_manager": {"breaker_failures": 1_000_000},
        "providers": [
            {"name": "mock", "type": "mock"},
            {"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": ["AIza-fuzz-key"]},
            {"name": "openai", "type": "openai", "base_url": mock.url + "/v1", "keys": ["sk-fuzz-key"]},
            {"name": "anthropic", "type": "anthropic", "base_url": mock.url + "/v1", "keys": ["sk-ant-fuzz"]},
            {"name": "ollama", "type": "ollama", "base_url": mock.url},
        ],
        "models": [
            {"name": "mock", "targets": [{"provider": "mock", "model": "mock-1"}]},
            {"name": "gem", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "oai", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {"name": "claude", "targets": [{"provider": "anthropic", "model": CLAUDE}]},
            {"name": "llama", "targets": [{"provider": "ollama", "model": "llama3.2:latest"}]},
            {"name": "gem-embed", "targets": [{"provider": "gemini", "model": "text-embedding-004"}]},
            {"name": "oai-embed", "targets": [{"provider": "openai", "model": "text-embedding-3-small"}]},
            {"name": "llama-embed", "targets": [{"provider": "ollama", "model": "nomic-embed-text"}]},
        ],
    }
    mock.record = False  # thousands of calls: keep none
    return create_app(parse_config(open_by_default(config))).test_client()


# ---------------------------------------------------------------- valid shapes

TEXT = st.text(alphabet="ab z{}\"é\n", max_size=10)
NAME = st.sampled_from(["get_weather", "lookup", "x"])
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SCHEMA = st.sampled_from([CITY, {"type": "object", "properties": {}}, {}])
# JSON inside strings, some nested past what Python's json (1000) or orjson (writes 254) can handle
DEEP_JSON = st.sampled_from(["[" * 3000 + "]" * 3000, '{"a": ' + "[" * 300 + "]" * 300 + "}"])
ARGS = st.one_of(st.sampled_from(['{"city": "Paris"}', "{}", '{"n": [1, 2]}']), DEEP_JSON)


def opt_fields(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(required, optional=optional)


# OpenAI
O_TEXT_PART = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
O_PART = st.one_of(
    O_TEXT_PART,
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {"url": st.sampled_from([f"data:image/png;base64,{PNG}", "https://example.com/cat.png",
                                 "gs://bucket/cat.png"])}, optional={"detail": st.just("low")})}),
    st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}),
    st.just({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==",
                                      "filename": "a.pdf"}}),
    # vendor and rarer part types: whatever else they carry is for the upstream to judge
    st.fixed_dictionaries({"type": st.sampled_from(["video_url", "input_text", "refusal"])},
                          optional={"text": TEXT, "refusal": TEXT, "video_url": st.just({"url": "https://x/v"})}),
)
O_CONTENT = st.one_of(TEXT, st.lists(O_PART, min_size=1, max_size=3))
O_CALL = st.fixed_dictionaries({"id": st.just("call_1"), "type": st.just("function"),
                                "function": st.fixed_dictionaries({"name": NAME, "arguments": ARGS})})
O_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]),
                           "content": st.one_of(TEXT, st.lists(O_TEXT_PART, min_size=1, max_size=2))}),
    opt_fields({"role": st.just("user"), "content": O_CONTENT}, {"name": TEXT}),
    opt_fields({"role": st.just("assistant"), "content": st.one_of(st.none(), TEXT)},
               {"tool_calls": st.lists(O_CALL, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.just("call_1"),
                           "content": st.one_of(TEXT, DEEP_JSON)}),
)
O_TOOL = st.one_of(
    st.fixed_dictionaries({"type": st.just("function"), "function": opt_fields(
        {"name": NAME}, {"description": TEXT, "parameters": SCHEMA, "strict": st.booleans()})}),
    st.sampled_from([{"type": "web_search"}, {"type": "custom", "function": None}]),
)
CHAT = opt_fields(
    {"model": st.sampled_from(CHAT_MODELS),
     "messages": st.tuples(st.lists(O_MESSAGE, max_size=3),
                           opt_fields({"role": st.just("user"), "content": O_CONTENT}, {}))
                   .map(lambda t: [*t[0], t[1]])},
    {
        "tools": st.lists(O_TOOL, min_size=1, max_size=2),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]),
                                 st.sampled_from([{"type": "function", "function": {"name": "get_weather"}},
                                                  {"type": "allowed_tools", "mode": "auto"}])),
        "response_format": st.sampled_from([
            {"type": "text"}, {"type": "json_object"},
            {"type": "json_schema",
             "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}}]),
        "stop": st.one_of(TEXT, st.lists(TEXT, max_size=4)),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "max_tokens": st.integers(1, 64),
        "max_completion_tokens": st.integers(1, 64),
        "n": st.just(1),
        "seed": st.integers(-(2**31), 2**31),
        "presence_penalty": st.floats(-2, 2),
        "frequency_penalty": st.floats(-2, 2),
        "logprobs": st.booleans(),
        "user": TEXT,
        "metadata": st.dictionaries(st.sampled_from(["a", "b"]), TEXT, max_size=2),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "parallel_tool_calls": st.booleans(),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "vendor_extension": TEXT,
    },
)
EMBED = opt_fields(
    {"model": st.sampled_from(EMBED_MODELS),
     "input": st.one_of(TEXT.filter(bool), st.lists(TEXT.filter(bool), min_size=1, max_size=3),
                        st.lists(st.integers(0, 50000), min_size=1, max_size=4),
                        st.lists(st.lists(st.integers(0, 50000), min_size=1, max_size=3),
                                 min_size=1, max_size=2))},
    {"encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers(1, 16), "user": TEXT},
)

# Anthropic
A_TEXT = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
A_IMAGE = st.fixed_dictionaries({"type": st.just("image"), "source": st.sampled_from([
    {"type": "base64", "media_type": "image/png", "data": PNG},
    {"type": "url", "url": "https://example.com/cat.png"}])})
A_RESULT = opt_fields({"type": st.just("tool_result"), "tool_use_id": st.just("toolu_1")},
                      {"content": st.one_of(TEXT, st.lists(A_TEXT, max_size=2)), "is_error": st.booleans()})
A_USE = st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.just("toolu_1"), "name": NAME,
                               "input": st.sampled_from([{}, {"city": "Paris"}])})
A_THINKING = st.just({"type": "thinking", "thinking": "hmm", "signature": "sig"})
A_OTHER = st.sampled_from([
    {"type": "search_result", "source": "x", "content": []},
    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}])
A_USER = st.fixed_dictionaries({"role": st.just("user"), "content": st.one_of(
    TEXT, st.lists(st.one_of(A_TEXT, A_IMAGE, A_RESULT, A_OTHER), min_size=1, max_size=3))})
A_ASSISTANT = st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(
    TEXT, st.lists(st.one_of(A_TEXT, A_USE, A_THINKING), min_size=1, max_size=3))})
A_TOOL = st.one_of(opt_fields({"name": NAME, "input_schema": SCHEMA}, {"description": TEXT}),
                   st.just({"type": "web_search_20250305", "name": "web_search"}))
A_FIELDS = {
    "system": st.one_of(TEXT, st.lists(A_TEXT, max_size=2)),
    "tools": st.lists(A_TOOL, min_size=1, max_size=2),
    "tool_choice": st.one_of(st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]),
                             st.just({"type": "tool", "name": "get_weather",
                                      "disable_parallel_tool_use": True})),
    "thinking": st.sampled_from([{"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}]),
}
A_MESSAGES = st.tuples(st.lists(st.tuples(A_USER, A_ASSISTANT), max_size=2), A_USER).map(
    lambda t: [m for pair in t[0] for m in pair] + [t[1]])
MESSAGES = opt_fields(
    {"model": st.sampled_from(CHAT_MODELS), "max_tokens": st.integers(1, 64), "messages": A_MESSAGES},
    {**A_FIELDS,
     "stop_sequences": st.lists(TEXT, max_size=3),
     "temperature": st.floats(0, 1),
     "top_p": st.floats(0, 1),
     "top_k": st.integers(0, 100),
     "metadata": st.fixed_dictionaries({}, optional={"user_id": TEXT}),
     "stream": st.booleans()},
)
# count_tokens answers 400 for models not served by an Anthropic upstream: mostly "claude"
COUNT_TOKENS = opt_fields({"model": st.sampled_from(["claude", "claude", "claude", "gem", "mock"]),
                           "messages": A_MESSAGES}, A_FIELDS)

# ---------------------------------------------------------------- mutations

LIKELY = st.sampled_from(["text", "image", "image_url", "function", "tool_use", "tool_result", "json_schema",
                          "base64", "url", "auto", "any", "tool", "none", "user", "assistant", "system", ""])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False,
                   allow_infinity=False), TEXT, LIKELY, DEEP_JSON)
JUNK = st.one_of(SCALAR, st.lists(SCALAR, max_size=3),
                 st.dictionaries(st.one_of(LIKELY, TEXT), SCALAR, max_size=3),
                 st.integers(1, 3).map(lambda n: [[{"type": "text"}]] * n))


def nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def slots(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((value, key))
        slots(child, out)
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict]) -> dict:
    """A valid body, then (mostly) a few wrong types or values put anywhere in it."""
    body = orjson.loads(orjson.dumps(draw(valid)))  # a copy: st.just / sampled_from values are shared
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        places = slots(body, [])
        if not places:  # everything deleted already
            break
        parent, key = places[draw(st.integers(0, len(places) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "deep"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(LIKELY, TEXT))] = draw(JUNK)
        elif action == "deep":
            parent[key] = nested(draw(st.sampled_from([10, 62, 63, 64, 65, 70, 256])))
        else:
            parent[key] = draw(JUNK)
    return body


# ---------------------------------------------------------------- the checks


def openai_error(obj: Any) -> None:
    err = obj["error"]
    assert isinstance(err["message"], str) and isinstance(err["type"], str), obj
    assert "param" in err and "code" in err, obj


def anthropic_error(obj: Any) -> None:
    assert obj["type"] == "error" and isinstance(obj["error"]["type"], str), obj
    assert isinstance(obj["error"]["message"], str), obj


def sse_data(text: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def check_openai(status: int, mimetype: str, raw: bytes, ok_object: str) -> None:
    if mimetype == "text/event-stream":
        assert status == 200
        text = raw.decode()
        assert text.endswith("data: [DONE]\n\n"), text
        for event in sse_data(text):
            if "error" in event:
                openai_error(event)
                assert event["error"]["type"] not in SERVER_ERROR_TYPES, event
            else:
                assert event["object"] == "chat.completion.chunk", event
        return
    obj = orjson.loads(raw)
    if status == 200:
        assert obj["object"] == ok_object, obj
    else:
        openai_error(obj)


def check_anthropic(status: int, mimetype: str, raw: bytes, ok_key: str) -> None:
    if mimetype == "text/event-stream":
        assert status == 200
        events = sse_data(raw.decode())
        assert events, raw
        for event in events:
            if event["type"] == "error":
                anthropic_error(event)
                assert event["error"]["type"] not in SERVER_ERROR_TYPES, event
        assert events[-1]["type"] in ("message_stop", "error"), events[-1]
        return
    obj = orjson.loads(raw)
    if status == 200:
        assert ok_key in obj, obj
    else:
        anthropic_error(obj)


def fuzz(client, path: str, strategy: st.SearchStrategy[dict], check: Callable[[int, str, bytes], None],
         ) -> collections.Counter:
    statuses: collections.Counter = collections.Counter()

    @FUZZ
    @seed(int(SEED or 0))
    @given(mutated(strategy))
    def run(body: dict) -> None:
        data = json.dumps(body)  # not orjson: it writes only 254 levels
        resp = client.post(path, data=data, content_type="application/json")
        try:
            raw = resp.get_data()
        finally:
            resp.close()
        statuses[resp.status_code] += 1
        assert resp.status_code < 500, (resp.status_code, raw[:500], body)
        check(resp.status_code, resp.mimetype, raw)

    run()
    print(path, dict(statuses))
    # the generator must reach the adapters, not only the door
    assert statuses[200] >= EXAMPLES // 10 and statuses[400] >= EXAMPLES // 10, statuses
    return statuses


# ---------------------------------------------------------------- one test per endpoint


def test_chat_completions(client):
    fuzz(client, "/v1/chat/completions", CHAT.map(lambda b: {**b, "stream": False}),
         lambda s, m, r: check_openai(s, m, r, "chat.completion"))


def test_chat_completions_stream(client):
    fuzz(client, "/v1/chat/completions", CHAT.map(lambda b: {**b, "stream": True}),
         lambda s, m, r: check_openai(s, m, r, "chat.completion"))


def test_embeddings(client):
    fuzz(client, "/v1/embeddings", EMBED, lambda s, m, r: check_openai(s, m, r, "list"))


def test_messages(client):
    fuzz(client, "/v1/messages", MESSAGES, lambda s, m, r: check_anthropic(s, m, r, "content"))


def test_count_tokens(client):
    fuzz(client, "/v1/messages/count_tokens", COUNT_TOKENS,
         lambda s, m, r: check_anthropic(s, m, r, "input_tokens"))
