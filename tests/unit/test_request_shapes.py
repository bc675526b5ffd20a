"""Issue 11 item 4: request shapes are checked at the door; a mistyped field is a 400 naming it.

The pure validators (proxy/api/shapes.py) first, then the probes from the issue through the app, for
every upstream type (the door answers before any upstream is called: the base URLs are unreachable).
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.api.shapes import MAX_DEPTH, check_depth, validate_chat, validate_embeddings, validate_messages
from proxy.app import create_app
from proxy.config import parse_config
from proxy.errors import BadRequest, GatewayError
from proxy.json_depth import loads_embedded
from proxy.providers.anthropic import to_anthropic_request
from proxy.providers.gemini_translate import to_gemini_request
from proxy.providers.ollama import to_ollama_request
from tests.harness import open_by_default

USER = {"role": "user", "content": "hi"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object"}, "strict": True}}


def chat(**fields: Any) -> dict:
    return {"model": "m", "messages": [USER], **fields}


def messages(**fields: Any) -> dict:
    return {"model": "m", "max_tokens": 16, "messages": [USER], **fields}


def param_of(validate: Any, body: dict) -> str | None:
    with pytest.raises(BadRequest) as info:
        validate(body)
    assert info.value.status == 400
    return info.value.param


def nested(depth: int) -> Any:
    """``depth`` levels of containers (the innermost holds a string)."""
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# ---------------------------------------------------------------- depth


def test_depth_limit_is_inclusive():
    check_depth(nested(MAX_DEPTH))
    with pytest.raises(BadRequest) as info:
        check_depth(nested(MAX_DEPTH + 1))
    assert info.value.code == "nesting_too_deep"


def test_depth_counts_the_deepest_branch_only():
    check_depth({"a": [[1, 2]] * 1000, "b": nested(MAX_DEPTH - 1)})
    with pytest.raises(BadRequest):
        check_depth({"a": [], "b": {"c": nested(MAX_DEPTH - 1)}})


# ---------------------------------------------------------------- chat completions


FULL_CHAT = chat(
    messages=[
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "really"}]},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}},
            {"type": "video_url", "video_url": {"url": "https://x"}},  # vendor part types pass through
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        USER,
    ],
    tools=[WEATHER, {"type": "web_search"}],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": {}, "strict": True}},
    stop=["a", "b"], n=1, max_tokens=5, max_completion_tokens=5, temperature=0.5, top_p=1,
    presence_penalty=-2, frequency_penalty=2, seed=-3, logprobs=True, top_logprobs=2, user="u",
    metadata={"a": "b"}, stream=True, stream_options={"include_usage": False}, parallel_tool_calls=False,
    reasoning_effort="low", logit_bias={"50256": -100}, modalities=["text"], vendor_field={"any": [1]},
)


def test_a_full_chat_request_passes():
    validate_chat(FULL_CHAT)


def test_null_means_absent():
    validate_chat(chat(tools=None, tool_choice=None, response_format=None, stop=None, temperature=None,
                       metadata=None, stream_options=None, n=None, max_tokens=None, user=None))


@pytest.mark.parametrize(("body", "param"), [
    # the probes from issue 11
    (chat(tools=[1]), "tools[0]"),
    (chat(tools="x"), "tools"),
    (chat(tool_choice={"type": "function", "function": 5}), "tool_choice.function"),
    (chat(messages=[{"role": "user", "content": [5]}]), "messages[0].content[0]"),
    (chat(messages=[USER, {"role": "assistant", "tool_calls": "x"}]), "messages[1].tool_calls"),
    (chat(response_format={"type": "json_schema", "json_schema": "x"}), "response_format.json_schema"),
    (chat(stop=5), "stop"),
    # and their neighbours
    (chat(messages=[USER, USER, {"role": "user", "content": [{"type": 5}]}]), "messages[2].content[0].type"),
    (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]),
     "messages[0].content[0].image_url"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
     "messages[0].content[0].image_url.url"),
    (chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": "x"}]}]),
     "messages[0].content[0].input_audio"),
    (chat(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_data": 1}}]}]),
     "messages[0].content[0].file.file_data"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"content": "x"}]), "messages[0].role"),
    (chat(messages=["hi"]), "messages[0]"),
    (chat(messages=[{"role": "user", "content": "x", "name": 1}]), "messages[0].name"),
    (chat(messages=[{"role": "assistant", "tool_calls": [5]}]), "messages[0].tool_calls[0]"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c"}]}]),
     "messages[0].tool_calls[0].function"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"id": [], "function": {"name": "f"}}]}]),
     "messages[0].tool_calls[0].id"),
    (chat(messages=[{"role": "tool", "tool_call_id": ["x"], "content": "x"}]), "messages[0].tool_call_id"),
    (chat(tools=[{"type": "function"}]), "tools[0].function"),
    (chat(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
     "tools[0].function.parameters"),
    (chat(tools=[{"type": "custom", "function": None}, {"type": 5}]), "tools[1].type"),
    (chat(tool_choice=5), "tool_choice"),
    (chat(tool_choice={"type": "function"}), "tool_choice.function"),
    (chat(tool_choice={"type": "function", "function": {"name": 5}}), "tool_choice.function.name"),
    (chat(response_format="json"), "response_format"),
    (chat(response_format={"type": 5}), "response_format.type"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": 5}}),
     "response_format.json_schema.schema"),
    (chat(stop=["a", 5]), "stop[1]"),
    (chat(model=""), "model"),
    (chat(model=5), "model"),
    ({"messages": [USER]}, "model"),
    ({"model": "m"}, "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages={"role": "user"}), "messages"),
    (chat(n=0), "n"),
    (chat(n=True), "n"),
    (chat(max_tokens="5"), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_completion_tokens=0), "max_completion_tokens"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=3), "temperature"),
    (chat(top_p=False), "top_p"),
    (chat(seed="s"), "seed"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options=5), "stream_options"),
    (chat(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (chat(metadata={"a": 5}), "metadata.a"),
    (chat(metadata=[]), "metadata"),
    (chat(user=5), "user"),
    (chat(reasoning_effort=1), "reasoning_effort"),
    (chat(logit_bias={"1": "x"}), "logit_bias.1"),
    (chat(top_logprobs=21), "top_logprobs"),
])
def test_chat_errors_name_the_field(body, param):
    assert param_of(validate_chat, body) == param


def test_messages_give_openai_style_codes():
    with pytest.raises(BadRequest) as info:
        validate_chat(chat(tools="x"))
    assert info.value.code == "invalid_type"
    assert info.value.message == "Invalid type for 'tools': expected an array, but got a string instead."
    with pytest.raises(BadRequest) as info:
        validate_chat({"messages": [USER]})
    assert info.value.code == "missing_required_parameter"


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("value", ["hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_embedding_inputs_pass(value):
    validate_embeddings({"model": "e", "input": value, "encoding_format": "base64", "dimensions": 8,
                         "user": "u"})


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "e"}, "input"),
    ({"model": "e", "input": ""}, "input"),
    ({"model": "e", "input": []}, "input"),
    ({"model": "e", "input": 5}, "input"),
    ({"model": "e", "input": ["a", None]}, "input[1]"),
    ({"model": "e", "input": [[1, "a"]]}, "input[0]"),
    ({"model": "e", "input": [True]}, "input[0]"),
    ({"model": "e", "input": "a", "dimensions": "8"}, "dimensions"),
    ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "e", "input": "a", "dimensions": 10**9}, "dimensions"),
    ({"model": "e", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"model": 1, "input": "a"}, "model"),
])
def test_embedding_errors_name_the_field(body, param):
    assert param_of(validate_embeddings, body) == param


# ---------------------------------------------------------------- anthropic messages

FULL_MESSAGES = messages(
    system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}],
             "is_error": False},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "search_result", "anything": 1},  # future block types pass through
        ]},
    ],
    tools=[{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}},
           {"type": "web_search_20250305", "name": "web_search"}],
    tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    stop_sequences=["END"], temperature=1, top_p=0.5, top_k=5, metadata={"user_id": "u"}, stream=False,
    thinking={"type": "enabled", "budget_tokens": 1024}, service_tier="auto",
)


def test_a_full_messages_request_passes():
    validate_messages(FULL_MESSAGES)


def test_count_tokens_takes_no_max_tokens():
    body = {"model": "m", "messages": [USER]}
    validate_messages(body, count_tokens=True)
    assert param_of(validate_messages, body) == "max_tokens"


@pytest.mark.parametrize(("body", "param"), [
    # the probe from issue 11
    (messages(messages=[{"role": "user", "content": [{"type": "image", "source": 5}]}]),
     "messages[0].content[0].source"),
    # and its neighbours
    (messages(messages=[{"role": "user", "content": [{"type": "image"}]}]), "messages[0].content[0].source"),
    (messages(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]),
     "messages[0].content[0].source.data"),
    (messages(messages=[{"role": "user", "content": [{"type": "image",
                                                      "source": {"type": "url", "url": 1}}]}]),
     "messages[0].content[0].source.url"),
    (messages(messages=[{"role": "user", "content": [{"type": "document", "source": []}]}]),
     "messages[0].content[0].source"),
    (messages(messages=[{"role": "user", "content": [5]}]), "messages[0].content[0]"),
    (messages(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0].type"),
    (messages(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    (messages(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                                           "input": "x"}]}]), "messages[0].content[0].input"),
    (messages(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]),
     "messages[0].content[0].id"),
    (messages(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 5}]}]),
     "messages[0].content[0].tool_use_id"),
    (messages(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                      "content": 5}]}]), "messages[0].content[0].content"),
    (messages(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                      "content": [7]}]}]),
     "messages[0].content[0].content[0]"),
    (messages(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                      "is_error": "no"}]}]),
     "messages[0].content[0].is_error"),
    (messages(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    (messages(messages=[{"role": "user", "content": {"type": "text"}}]), "messages[0].content"),
    (messages(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    (messages(messages=[[]]), "messages[0]"),
    (messages(messages="hi"), "messages"),
    (messages(system=5), "system"),
    (messages(system=[{"type": "image"}]), "system[0].type"),
    (messages(system=[{"type": "text", "text": None}]), "system[0].text"),
    (messages(tools="x"), "tools"),
    (messages(tools=[1]), "tools[0]"),
    (messages(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (messages(tools=[{"name": "f", "input_schema": "x"}]), "tools[0].input_schema"),
    (messages(tools=[{"input_schema": {}}]), "tools[0].name"),
    (messages(tool_choice="auto"), "tool_choice"),
    (messages(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (messages(tool_choice={"type": "tool"}), "tool_choice.name"),
    (messages(stop_sequences="END"), "stop_sequences"),
    (messages(stop_sequences=["END", 5]), "stop_sequences[1]"),
    (messages(max_tokens=0), "max_tokens"),
    (messages(max_tokens="5"), "max_tokens"),
    (messages(temperature=2), "temperature"),
    (messages(top_k="5"), "top_k"),
    (messages(metadata="x"), "metadata"),
    (messages(metadata={"user_id": 5}), "metadata.user_id"),
    (messages(stream="true"), "stream"),
    (messages(thinking=5), "thinking"),
    (messages(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    (messages(thinking={"type": "enabled", "budget_tokens": "many"}), "thinking.budget_tokens"),
])
def test_messages_errors_name_the_field(body, param):
    assert param_of(validate_messages, body) == param


# ---------------------------------------------------------------- through the app, every upstream type

DEAD = "http://127.0.0.1:9"  # never called: the door answers first
KINDS = ["mock", "gemini", "openai", "anthropic", "ollama"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    providers = [{"name": "mock", "type": "mock"}] + [
        {"name": kind, "type": kind, "base_url": DEAD, "keys": [f"key-{kind}"]} for kind in KINDS[1:3]
    ] + [{"name": "anthropic", "type": "anthropic", "base_url": DEAD, "keys": ["sk-ant-x"]},
         {"name": "ollama", "type": "ollama", "base_url": DEAD}]
    config = {
        "server": {"database": str(tmp_path_factory.mktemp("shapes") / "k.db"), "log_level": "error"},
        "providers": providers,
        "models": [{"name": kind, "targets": [{"provider": kind, "model": "m-1"}]} for kind in KINDS],
    }
    return create_app(parse_config(open_by_default(config))).test_client()


CHAT_PROBES = [
    ({"tools": [1]}, "tools[0]"),
    ({"tools": "x"}, "tools"),
    ({"tool_choice": {"type": "function", "function": 5}}, "tool_choice.function"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": "x"}, USER]}, "messages[1].tool_calls"),
    ({"response_format": {"type": "json_schema", "json_schema": "x"}}, "response_format.json_schema"),
    ({"stop": 5}, "stop"),
    ({"metadata": nested(256)}, None),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("fields", "param"), CHAT_PROBES)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_probes_are_400_with_the_openai_envelope(client, kind, fields, param, stream):
    body = {"model": kind, "messages": [USER], "stream": stream, **fields}
    resp = client.post("/v1/chat/completions", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400, resp.get_data()
    err = resp.get_json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == ("nesting_too_deep" if param is None else "invalid_type")
    assert isinstance(err["message"], str)


MESSAGES_PROBES = [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
     "messages[0].content[0].source"),
    ({"stop_sequences": 5}, "stop_sequences"),
    ({"tools": [1]}, "tools[0]"),
    ({"metadata": nested(256)}, None),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("fields", "param"), MESSAGES_PROBES)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_messages_probes_are_400_with_the_anthropic_envelope(client, kind, fields, param, path):
    body = {"model": kind, "max_tokens": 8, "messages": [USER], **fields}
    resp = client.post(path, data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400, resp.get_data()
    obj = resp.get_json()
    assert obj["type"] == "error" and obj["error"]["type"] == "invalid_request_error"
    assert (param or "nested more than") in obj["error"]["message"]


@pytest.mark.parametrize("kind", ["mock", "gemini", "openai", "ollama"])
def test_embeddings_probe_is_400(client, kind):
    body = {"model": kind, "input": ["a", {"x": 1}]}
    resp = client.post("/v1/embeddings", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == "input[1]"


def test_a_valid_request_still_reaches_the_mock(client):
    resp = client.post("/v1/chat/completions", json={**FULL_CHAT, "model": "mock", "stream": False,
                                                     "tools": [WEATHER]})
    assert resp.status_code == 200, resp.get_data()
    assert resp.get_json()["object"] == "chat.completion"


# ---------------------------------------------------------------- adapters, on shapes the door accepts

DEEP = "[" * 3000 + "]" * 3000  # json.loads: RecursionError
TALL = '{"a": ' + "[" * 300 + "]" * 300 + "}"  # parses, but orjson cannot write it into the upstream body


@pytest.mark.parametrize("text", [DEEP, TALL])
def test_embedded_json_nested_too_deeply_is_a_value_error(text):
    with pytest.raises(ValueError, match="nested too deeply"):
        loads_embedded(text)


def test_embedded_json_within_the_limit_parses():
    assert loads_embedded('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def _deep_history(arguments: str, result: str) -> dict:
    return chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": result}, USER])


@pytest.mark.parametrize("arguments", [DEEP, TALL])
@pytest.mark.parametrize("translate", [
    lambda req: to_gemini_request(req, "gemini-2.5-flash"),
    lambda req: to_anthropic_request(req, "claude"),
    lambda req: to_ollama_request(req, "llama"),
])
def test_deep_tool_call_arguments_are_a_client_error(translate, arguments):
    body = _deep_history(arguments, "ok")
    validate_chat(body)  # a valid shape: the arguments are a string
    with pytest.raises(GatewayError) as info:
        translate(body)
    assert info.value.status == 400


@pytest.mark.parametrize("result", [DEEP, TALL])
def test_deep_tool_results_are_sent_as_text_to_gemini(result):
    body = to_gemini_request(_deep_history("{}", result), "gemini-2.5-flash")
    parts = [p for c in body["contents"] for p in c["parts"]]
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    assert responses == [{"name": "f", "response": {"result": result}}]


@pytest.mark.parametrize("body", [
    chat(model="mock", tools=[{"type": "custom", "function": None}]),
    chat(model="mock", messages=[{"role": "user", "content": [{"type": "video_url", "text": 5}]}]),
])
def test_the_mock_adapter_takes_every_valid_shape(client, body):
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.get_data()
