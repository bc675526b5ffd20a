"""Issue 8: OpenAI clients (and Anthropic clients) reaching Anthropic and Ollama upstreams through a real
keyrelay (gunicorn + gevent), against a local mock speaking Anthropic's SSE and Ollama's NDJSON."""
from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest

from proxy.providers.base import Call, Timeouts
from proxy.providers.ollama import OllamaAdapter
from tests.harness import Server
from tests.mock_upstream import error

ANT_KEY = "sk-ant-upstreams-key-1"
CLAUDE = "claude-sonnet-4-20250514"
LLAMA = "llama3.2:latest"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 60).decode()
# (provider type, status, openai exception); each case gets its own provider entry (and key) so its
# cooldowns and breaker state, which persist in SQLite for the module, touch nothing else.
ERROR_CASES = [
    ("anthropic", 400, openai.BadRequestError),
    ("anthropic", 429, openai.RateLimitError),
    ("anthropic", 529, openai.InternalServerError),
    ("ollama", 404, openai.NotFoundError),
    ("ollama", 500, openai.InternalServerError),
]


def err_provider(kind: str, status: int) -> str:
    return f"{kind}-e{status}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    errors = []
    for kind, status, _ in ERROR_CASES:
        entry = {"name": err_provider(kind, status), "type": kind, "passthrough": "any"}
        if kind == "anthropic":
            entry.update(base_url=mock.url + "/v1", keys=[f"sk-ant-err-{status}"])
        else:
            entry.update(base_url=mock.url)
        errors.append(entry)
    config = {
        "server": {"log_level": "info"},
        "retry": {"attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "providers": [
            {"name": "claude", "type": "anthropic", "base_url": mock.url + "/v1", "keys": [ANT_KEY],
             "models": [CLAUDE]},
            {"name": "ollama", "type": "ollama", "base_url": mock.url, "models": [LLAMA, "qwen2.5:7b"],
             "passthrough": "any"},
            *errors,
        ],
        "models": [
            {"name": "claude", "targets": [{"provider": "claude", "model": CLAUDE}]},
            {"name": "local", "targets": [{"provider": "ollama", "model": LLAMA}]},
        ],
    }
    with Server(tmp_path_factory.mktemp("anthropic-ollama"), config) as gateway:
        yield gateway


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)


@pytest.fixture
def aclient(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)


def user(text):
    return [{"role": "user", "content": text}]


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def collect(stream) -> tuple[str, dict[int, dict], str | None, list]:
    """(text, tool calls by index with the number of argument fragments, last finish_reason, chunks)."""
    chunks = list(stream)
    text, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": "", "args": "", "fragments": 0})
                entry["id"] = entry["id"] or tc.id
                entry["name"] += (tc.function.name or "") if tc.function else ""
                if tc.function and tc.function.arguments:
                    entry["args"] += tc.function.arguments
                    entry["fragments"] += 1
            finish = choice.finish_reason or finish
    return text, calls, finish, chunks


# ---------------------------------------------------------------- openai SDK -> Anthropic upstream


def test_chat_via_anthropic(client, mock):
    resp = client.chat.completions.create(model="claude", temperature=0.5, stop=["END"], messages=[
        {"role": "system", "content": "Be terse."}, *user("What is the capital of Wyoming?")])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == "echo: What is the capital of Wyoming?"
    assert resp.usage.prompt_tokens > 0 and resp.usage.total_tokens > resp.usage.prompt_tokens
    call = mock.find(key=ANT_KEY, path="/v1/messages")[-1]
    body = call["body"]
    assert body["model"] == CLAUDE and body["system"] == "Be terse." and body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": [{"type": "text",
                                                               "text": "What is the capital of Wyoming?"}]}]
    assert body["temperature"] == 0.5 and body["stop_sequences"] == ["END"]
    assert call["headers"]["x-api-key"] == ANT_KEY and call["headers"]["anthropic-version"]


def test_streaming_via_anthropic(client):
    text, calls, finish, chunks = collect(client.chat.completions.create(
        model="claude", messages=user("stream please"), max_tokens=50, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == "echo: stream please" and not calls and finish == "stop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # really streamed
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_image_input_via_anthropic(client, mock):
    resp = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert "[image image/png 68 bytes]" in resp.choices[0].message.content
    block = mock.find(key=ANT_KEY)[-1]["body"]["messages"][0]["content"][1]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def test_tool_round_trip_via_anthropic(client, mock):
    messages = user("What's the weather in Paris?")
    first = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER],
                                           tool_choice="required", parallel_tool_calls=False)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = mock.find(key=ANT_KEY)[-1]["body"]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})}]
    final = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == 'echo: function get_weather returned {"temp_c": 21}'
    turns = mock.find(key=ANT_KEY)[-1]["body"]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1] == {"type": "tool_use", "id": call.id, "name": "get_weather",
                                       "input": {"city": "Paris"}}
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id,
                                    "content": json.dumps({"temp_c": 21})}]


def test_streamed_tool_call_deltas_via_anthropic(client):
    text, calls, finish, _ = collect(client.chat.completions.create(
        model="claude", messages=user("parallel: weather and time in Oslo"), tools=[WEATHER, TIME],
        stream=True))
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1] and [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert all(c["id"] and json.loads(c["args"]) == {"city": "Oslo"} for c in calls.values())
    assert all(c["fragments"] >= 2 for c in calls.values()), "arguments arrive as input_json_delta pieces"
    assert text == "I'll use get_weather, get_time."


# ---------------------------------------------------------------- openai SDK -> Ollama upstream


def test_chat_via_ollama(client, mock):
    resp = client.chat.completions.create(model="local", max_tokens=32, temperature=0,
                                          messages=[{"role": "system", "content": "Be terse."},
                                                    *user("hello llama")])
    assert resp.choices[0].message.content == "echo: hello llama"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    call = mock.find(dialect="ollama", path="/api/chat")[-1]
    assert call["body"]["model"] == LLAMA and call["body"]["stream"] is False
    assert call["body"]["options"] == {"temperature": 0, "num_predict": 32}
    assert call["body"]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert "authorization" not in call["headers"]  # no key goes to Ollama


def test_streaming_via_ollama(client, mock):
    text, calls, finish, chunks = collect(client.chat.completions.create(
        model="local", messages=user("stream from ollama"), stream=True,
        stream_options={"include_usage": True}))
    assert text == "echo: stream from ollama" and finish == "stop" and not calls
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    assert chunks[-1].usage.total_tokens > 0
    assert mock.find(dialect="ollama")[-1]["body"]["stream"] is True


def test_tool_call_round_trip_via_ollama(client, mock):
    messages = user("What's the weather in Kyiv?")
    first = client.chat.completions.create(model="local", messages=messages, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.id and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Kyiv"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "cold"}]
    final = client.chat.completions.create(model="local", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "echo: function get_weather returned cold"
    sent = mock.find(dialect="ollama")[-1]["body"]["messages"]
    assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Kyiv"}}}]
    assert sent[2] == {"role": "tool", "content": "cold", "tool_name": "get_weather"}


def test_streamed_tool_call_via_ollama(client):
    _, calls, finish, _ = collect(client.chat.completions.create(
        model="local", messages=user("parallel: weather and time in Oslo"), tools=[WEATHER, TIME],
        stream=True))
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert all(c["id"] and json.loads(c["args"]) == {"city": "Oslo"} for c in calls.values())


def test_models_via_ollama(client, mock):
    ids = {m.id for m in client.models.list().data}
    assert {"local", f"ollama/{LLAMA}", "ollama/qwen2.5:7b"} <= ids
    resp = client.chat.completions.create(model="ollama/qwen2.5:7b", messages=user("which model"))
    assert resp.choices[0].message.content == "echo: which model"
    assert mock.find(dialect="ollama")[-1]["body"]["model"] == "qwen2.5:7b"


def test_ollama_adapter_probes_over_a_socket(mock):
    call = Call(base_url=mock.url, model=LLAMA, key=None, timeouts=Timeouts(2, 5, 5))
    adapter = OllamaAdapter()
    adapter.probe(call)
    assert mock.find(dialect="ollama", path="/api/tags")


def test_embeddings_via_ollama(client, mock):
    out = client.embeddings.create(model="ollama/nomic-embed-text", input=["a", "b"], encoding_format="float")
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 8
    assert mock.find(dialect="ollama", path="/api/embed")[-1]["body"]["input"] == ["a", "b"]


# ---------------------------------------------------------------- anthropic SDK -> Ollama upstream


def test_anthropic_client_via_ollama(aclient, mock):
    msg = aclient.messages.create(model="local", max_tokens=20, system="Be terse.",
                                  messages=[{"role": "user", "content": "hi from claude code"}])
    assert msg.content[0].text == "echo: hi from claude code" and msg.stop_reason == "end_turn"
    assert msg.model == "local" and msg.usage.input_tokens > 0
    body = mock.find(dialect="ollama")[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert body["options"]["num_predict"] == 20


def test_anthropic_client_streams_text_and_tools_via_ollama(aclient):
    with aclient.messages.stream(model="local", max_tokens=64,
                                 messages=[{"role": "user", "content": "stream it"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream it" and final.stop_reason == "end_turn"
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    with aclient.messages.stream(model="local", max_tokens=64, tools=[tool],
                                 messages=[{"role": "user", "content": "weather in Nairobi"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"city": "Nairobi"}


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kind,status,exc", ERROR_CASES, ids=[f"{k}-{s}" for k, s, _ in ERROR_CASES])
def test_upstream_errors_are_typed_openai_exceptions(client, mock, kind, status, exc):
    model = f"err-model-{status}"
    mock.script(model=model, dialect=kind, behaviour=error(status))
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=f"{err_provider(kind, status)}/{model}", messages=user("fail"))
    body = info.value.response.json()
    assert body["error"]["message"] and "sk-ant-err" not in info.value.response.text
    if status == 429:
        assert int(info.value.response.headers["Retry-After"]) >= 1
