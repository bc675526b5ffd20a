"""Issue 3: the openai SDK → keyrelay (gunicorn + gevent) → a local mock speaking Gemini's wire format."""

from __future__ import annotations

import base64
import json
import threading
import time

import openai
import pytest
import requests

from tests.harness import Server
from tests.mock_upstream import error, hold, pace

KEY = "gem-dataplane-key-1"
ERR_KEY = "gem-dataplane-key-errors"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 60).decode()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"log_level": "info"},
        "retry": {"attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "providers": [
            {
                "name": "gemini",
                "type": "gemini",
                "base_url": mock.url + "/v1beta",
                "keys": [KEY],
                "models": ["gemini-2.5-flash"],
                "passthrough": "any",
            },
            {"name": "gemini-errors", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": [ERR_KEY],
             "passthrough": "any"},
            {"name": "compat", "type": "openai", "base_url": mock.url + "/v1", "keys": ["sk-compat-1"]},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "embed", "targets": [{"provider": "gemini", "model": "gemini-embedding-001"}]},
            {"name": "compat-chat", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}]},
        ],
    }
    with Server(tmp_path_factory.mktemp("gemini"), config) as gateway:
        yield gateway


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)


def user(text):
    return [{"role": "user", "content": text}]


def test_plain_chat(client, mock):
    resp = client.chat.completions.create(
        model="flash",
        messages=[{"role": "system", "content": "Be terse."}, *user("What is the capital of Wyoming?")],
    )
    assert resp.choices[0].finish_reason == "stop"
    assert "capital of Wyoming" in resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and resp.usage.total_tokens >= resp.usage.prompt_tokens
    call = mock.find(key=KEY, path="/v1beta/models/gemini-2.5-flash:generateContent")[-1]
    assert call["body"]["systemInstruction"]["parts"][0]["text"] == "Be terse."
    assert KEY not in json.dumps(call.get("query", {}))  # key in the header, not the URL


def test_streaming_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="flash", messages=user("stream please"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream please" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="flash", messages=user("no usage"), stream=True))
    assert all(c.choices for c in chunks)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tool_call_round_trip_echoes_thought_signature(client, mock):
    messages = user("What's the weather in Paris?")
    first = client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    json.loads(call.function.arguments)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})},
    ]
    mock.clear()
    final = client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content
    sent = mock.calls[-1]["body"]["contents"]
    model_turn = next(t for t in sent if t["role"] == "model")
    fc_part = next(p for p in model_turn["parts"] if "functionCall" in p)
    assert fc_part.get("thoughtSignature"), "the thought signature must be echoed back to Gemini"
    tool_turn = sent[-1]
    assert tool_turn["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_parallel_tool_calls_streamed(client):
    stream = client.chat.completions.create(
        model="flash", messages=user("parallel: weather and time in Oslo"), tools=[WEATHER, TIME], stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"name": "", "args": "", "id": None})
                entry["id"] = entry["id"] or tc.id
                entry["name"] += tc.function.name or ""
                entry["args"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(c["name"] for c in calls.values()) == ["get_time", "get_weather"]
    assert all(c["id"] for c in calls.values()) and all(
        json.loads(c["args"]) is not None for c in calls.values()
    )


def test_json_mode(client, mock):
    resp = client.chat.completions.create(
        model="flash", messages=user("give me json"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(resp.choices[0].message.content), dict)
    assert mock.calls[-1]["body"]["generationConfig"]["responseMimeType"] == "application/json"


def test_image_input(client, mock):
    resp = client.chat.completions.create(
        model="flash",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
    )
    assert "image/png" in resp.choices[0].message.content
    part = mock.calls[-1]["body"]["contents"][0]["parts"][1]
    assert part["inlineData"] == {"mimeType": "image/png", "data": PNG}


def test_embeddings_single_and_batch(client, mock):
    one = client.embeddings.create(model="embed", input="hello")
    assert len(one.data) == 1 and len(one.data[0].embedding) > 0
    assert mock.calls[-1]["path"].endswith(":embedContent")
    batch = client.embeddings.create(model="embed", input=["a", "b", "c"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert mock.calls[-1]["path"].endswith(":batchEmbedContents")
    floats = client.embeddings.create(model="embed", input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(one.data[0].embedding, rel=1e-6)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list().data]
    assert {"flash", "embed", "compat-chat", "gemini/gemini-2.5-flash"} <= set(ids)
    assert client.models.retrieve("flash").id == "flash"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_provider_model_pass_through(client, mock):
    resp = client.chat.completions.create(model="gemini/gemini-2.0-flash", messages=user("pass through"))
    assert resp.choices[0].message.content
    assert mock.calls[-1]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"


def test_openai_compatible_upstream(client, mock):
    resp = client.chat.completions.create(model="compat-chat", messages=user("hi compat"))
    assert resp.choices[0].message.content
    call = mock.calls[-1]
    assert (
        call["dialect"] == "openai"
        and call["body"]["model"] == "gpt-4o-mini"
        and call["key"] == "sk-compat-1"
    )
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="compat-chat", messages=user("stream compat"), stream=True
        )
        if c.choices
    )
    assert text


@pytest.mark.parametrize(
    "status,exc",
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_upstream_errors_are_typed_sdk_exceptions(client, mock, status, exc):
    model = f"err-{status}"
    mock.script(key=ERR_KEY, model=model, behaviour=error(status, retry_delay="30s"))
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=f"gemini-errors/{model}", messages=user("fail"))
    body = info.value.response.json()
    assert body["error"]["message"] and ERR_KEY not in info.value.response.text
    if status == 429:
        assert int(info.value.response.headers["Retry-After"]) >= 29


def test_chunks_arrive_before_upstream_finishes(gw, mock):
    """The mock holds the stream open after chunk 1; the client must already have it."""
    mock.script(key=KEY, model="gemini-hold", behaviour=pace(chunks=3) + hold("go", after=1), times=1)
    got_first = threading.Event()
    result: dict = {}

    def consume():
        r = requests.post(
            gw.url + "/v1/chat/completions",
            stream=True,
            timeout=30,
            json={"model": "gemini/gemini-hold", "stream": True, "messages": user("hold the line")},
        )
        lines = []
        for line in r.iter_lines():
            if line.startswith(b"data: ") and b"content" in line and not got_first.is_set():
                result["first_at"] = time.monotonic()
                got_first.set()
            if line:
                lines.append(line)
        result["lines"] = lines

    t = threading.Thread(target=consume)
    t.start()
    assert got_first.wait(10), "chunk 1 did not reach the client while the upstream held the stream"
    assert "lines" not in result  # the stream is still open
    released = time.monotonic()
    mock.release("go")
    t.join(10)
    assert result["lines"][-1] == b"data: [DONE]" and released > result["first_at"]
