"""Issue 18 must-show 4, property-based: generated Responses API and Gemini-native bodies (valid shapes with
wrong types and values injected at every level, ``test_fuzz_requests.mutated``) through the in-process
app with every provider type configured, so the translations and adapters really run.

Whatever the body, the answer is never a 5xx and always the caller's envelope: OpenAI's for
``/v1/responses`` (a typed event stream for successful streams), Gemini's for ``/v1beta/...``.
"""
from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from tests.integration.test_fuzz_requests import (
    ARGS,
    FUZZ,
    NAME,
    PNG,
    SCHEMA,
    SEED,
    TEXT,
    mutated,
    openai_error,
)

EXAMPLES = int(os.environ.get("KEYRELAY_FUZZ_EXAMPLES", "2000")) // 4  # per test: ~15 s each
MODELS = ["mock", "gem", "oai", "claude", "llama"]


@pytest.fixture(scope="module")
def client(tmp_path_factory, mock):
    from proxy.app import create_app
    from proxy.config import parse_config
    from tests.harness import open_by_default

    config = {
        "server": {"database": str(tmp_path_factory.mktemp("fuzz-dialects") / "keyrelay.db"),
                   "log_level": "error"},
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
            {"name": "claude", "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-20250514"}]},
            {"name": "llama", "targets": [{"provider": "ollama", "model": "llama3.2:latest"}]},
        ],
    }
    mock.record = False
    return create_app(parse_config(open_by_default(config))).test_client()


def opt_fields(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(required, optional=optional)


# ---------------------------------------------------------------- Responses API

R_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.sampled_from(
        [f"data:image/png;base64,{PNG}", "https://example.com/cat.png"])}),
    st.just({"type": "input_file", "file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}),
)
R_ITEM = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]),
                           "content": st.one_of(TEXT, st.lists(R_PART, min_size=1, max_size=2))}),
    st.fixed_dictionaries({"type": st.just("message"), "role": st.just("assistant"), "content": st.one_of(
        TEXT, st.just([{"type": "output_text", "text": "earlier"}]))}),
    st.fixed_dictionaries({"type": st.just("function_call"), "call_id": st.just("call_1"), "name": NAME,
                           "arguments": ARGS}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": st.just("call_1"),
                           "output": TEXT}),
)
RESPONSES = opt_fields(
    {"model": st.sampled_from(MODELS),
     "input": st.one_of(TEXT, st.tuples(st.lists(R_ITEM, max_size=3), st.fixed_dictionaries(
         {"role": st.just("user"), "content": TEXT})).map(lambda t: [*t[0], t[1]]))},
    {"instructions": TEXT,
     "tools": st.lists(st.one_of(opt_fields({"type": st.just("function"), "name": NAME},
                                            {"parameters": SCHEMA, "description": TEXT}),
                                 st.just({"type": "web_search"})), min_size=1, max_size=2),
     "tool_choice": st.sampled_from(["auto", "none", "required",
                                     {"type": "function", "name": "get_weather"}]),
     "max_output_tokens": st.integers(1, 64), "temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
     "text": st.sampled_from([{"format": {"type": "text"}}, {"format": {"type": "json_object"}},
                              {"format": {"type": "json_schema", "name": "out",
                                          "schema": {"type": "object"}}}]),
     "stream": st.booleans(), "store": st.booleans(), "parallel_tool_calls": st.booleans(),
     "reasoning": st.sampled_from([{"effort": "low"}, {}]), "metadata": st.just({"a": "b"})},
)


def check_responses(status: int, mimetype: str, raw: bytes) -> None:
    if mimetype == "text/event-stream":
        assert status == 200
        events = [orjson.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "response.created", events[0]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed"), events
        return
    obj = orjson.loads(raw)
    if status == 200:
        assert obj["object"] == "response" and obj["output"], obj
    else:
        openai_error(obj)


# ---------------------------------------------------------------- Gemini-native

G_PART = st.one_of(
    st.fixed_dictionaries({"text": TEXT}),
    st.just({"inlineData": {"mimeType": "image/png", "data": PNG}}),
    st.just({"fileData": {"fileUri": "gs://bucket/a.pdf", "mimeType": "application/pdf"}}),
    st.fixed_dictionaries({"functionResponse": st.fixed_dictionaries({"name": NAME, "response": st.just(
        {"temp": 21})})}),
)
G_MODEL_TURN = st.fixed_dictionaries({"role": st.just("model"), "parts": st.lists(st.one_of(
    st.fixed_dictionaries({"text": TEXT}),
    st.fixed_dictionaries({"functionCall": st.fixed_dictionaries({"name": NAME, "args": st.just(
        {"city": "Paris"})})})), min_size=1, max_size=2)})
G_USER_TURN = st.fixed_dictionaries({"role": st.just("user"),
                                     "parts": st.lists(G_PART, min_size=1, max_size=3)})
GENERATE = opt_fields(
    {"contents": st.tuples(st.lists(st.tuples(G_USER_TURN, G_MODEL_TURN), max_size=2), G_USER_TURN).map(
        lambda t: [c for pair in t[0] for c in pair] + [t[1]])},
    {"systemInstruction": st.fixed_dictionaries({"parts": st.lists(st.fixed_dictionaries({"text": TEXT}),
                                                                   min_size=1, max_size=2)}),
     "tools": st.lists(st.one_of(
         st.fixed_dictionaries({"functionDeclarations": st.lists(opt_fields(
             {"name": NAME}, {"description": TEXT, "parameters": st.sampled_from(
                 [{"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}, {}])}), min_size=1,
             max_size=2)}),
         st.just({"googleSearch": {}})), min_size=1, max_size=2),
     "toolConfig": st.sampled_from([{"functionCallingConfig": {"mode": m}} for m in ("AUTO", "ANY", "NONE")]),
     "generationConfig": opt_fields({}, {
         "temperature": st.floats(0, 2), "topP": st.floats(0, 1), "topK": st.integers(1, 40),
         "maxOutputTokens": st.integers(1, 64), "stopSequences": st.lists(TEXT, max_size=2),
         "responseMimeType": st.sampled_from(["text/plain", "application/json"]),
         "responseSchema": st.just({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}})}),
     "safetySettings": st.just([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}])},
)
GEMINI_METHODS = ["generateContent", "streamGenerateContent?alt=sse", "streamGenerateContent", "countTokens"]
G_EMBED = opt_fields({"content": st.fixed_dictionaries({"parts": st.lists(
    st.one_of(st.fixed_dictionaries({"text": TEXT}), st.just({"inlineData": {"mimeType": "image/png",
                                                                              "data": PNG}})),
    min_size=1, max_size=2)})}, {"outputDimensionality": st.integers(1, 16), "taskType": st.just("QUERY")})
G_BATCH = st.fixed_dictionaries({"requests": st.lists(G_EMBED, min_size=1, max_size=3)})


def check_gemini(status: int, mimetype: str, raw: bytes) -> None:
    def is_error(obj: dict) -> bool:
        err = obj.get("error")
        if err is None:
            return False
        assert set(err) == {"code", "message", "status"} and isinstance(err["status"], str), obj
        return True

    if mimetype == "text/event-stream":
        assert status == 200
        events = [orjson.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events and all(is_error(e) or "candidates" in e for e in events), events
        return
    obj = orjson.loads(raw)
    if status != 200:
        assert is_error(obj) and obj["error"]["code"] == status, obj
    elif isinstance(obj, list):  # the JSON-array stream
        assert all(is_error(e) or "candidates" in e for e in obj), obj
    else:
        assert {"candidates", "totalTokens", "embedding", "embeddings"} & set(obj), obj


# ---------------------------------------------------------------- the runs


def fuzz(client, strategy: st.SearchStrategy[tuple[str, dict]], check: Callable[[int, str, bytes], None]
         ) -> collections.Counter:
    statuses: collections.Counter = collections.Counter()

    @settings(FUZZ, max_examples=EXAMPLES)
    @seed(int(SEED or 0))
    @given(strategy)
    def run(case: tuple[str, dict]) -> None:
        path, body = case
        resp = client.post(path, data=json.dumps(body), content_type="application/json")
        try:
            raw = resp.get_data()
        finally:
            resp.close()
        statuses[resp.status_code] += 1
        assert resp.status_code < 500, (resp.status_code, raw[:500], path, body)
        check(resp.status_code, resp.mimetype, raw)

    run()
    print(dict(statuses))
    assert statuses[200] >= EXAMPLES // 10 and statuses[400] >= EXAMPLES // 10, statuses
    return statuses


def test_responses_bodies(client):
    fuzz(client, st.tuples(st.just("/v1/responses"), mutated(RESPONSES)), check_responses)


def test_gemini_native_bodies(client):
    paths = st.tuples(st.sampled_from(MODELS), st.sampled_from(GEMINI_METHODS)).map(
        lambda t: f"/v1beta/models/{t[0]}:{t[1]}")
    fuzz(client, st.tuples(paths, mutated(GENERATE)), check_gemini)


def test_gemini_native_embeddings(client):
    cases = st.one_of(
        st.tuples(st.sampled_from(MODELS).map(lambda m: f"/v1beta/models/{m}:embedContent"),
                  mutated(G_EMBED)),
        st.tuples(st.sampled_from(MODELS).map(lambda m: f"/v1beta/models/{m}:batchEmbedContents"),
                  mutated(G_BATCH)))
    fuzz(client, cases, check_gemini)
