"""Issue 8: the official anthropic SDK → keyrelay /v1/messages (gunicorn + gevent) → a local mock speaking
Gemini's wire format and a local mock speaking Anthropic's (the latter as a faithful pass-through)."""
from __future__ import annotations

import json

import anthropic
import pytest
import requests

from tests.harness import Server
from tests.mock_upstream import MockUpstream, error, reset_after

GEM_KEY = "gem-msgs-key-1"
ANT_KEY = "sk-ant-msgs-key-1"
BETA_KEY = "sk-ant-msgs-beta"
CONFIGURED_BETA = "prompt-caching-2024-07-31"
CLAUDE = "claude-sonnet-4-20250514"
# One provider (and key) per error case: scripted errors cool keys down and open circuit breakers, and
# that state persists in the gateway's SQLite for the whole module.
ERROR_CASES = [
    ("claude", 400, anthropic.BadRequestError, "invalid_request_error"),
    ("claude", 404, anthropic.NotFoundError, "not_found_error"),
    ("claude", 429, anthropic.RateLimitError, "rate_limit_error"),
    ("claude", 500, anthropic.InternalServerError, "api_error"),
    ("claude", 529, anthropic.InternalServerError, "overloaded_error"),
    ("gemini", 400, anthropic.BadRequestError, "invalid_request_error"),
    ("gemini", 404, anthropic.NotFoundError, "not_found_error"),
    ("gemini", 429, anthropic.RateLimitError, "rate_limit_error"),
    ("gemini", 500, anthropic.InternalServerError, "api_error"),
    ("gemini", 503, anthropic.InternalServerError, "overloaded_error"),
]
STREAM_CASES = ["claude", "gemini"]


def err_provider(kind: str, tag: object) -> str:
    return f"{kind}-e{tag}"


def err_key(kind: str, tag: object) -> str:
    return f"{kind}-err-key-{tag}"


def _provider(kind: str, name: str, key: str, mock: MockUpstream, **extra: object) -> dict:
    base = mock.url + ("/v1beta" if kind == "gemini" else "/v1")
    return {"name": name, "type": "gemini" if kind == "gemini" else "anthropic", "base_url": base,
            "keys": [key], **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    tags = [(kind, status) for kind, status, _, _ in ERROR_CASES]
    tags += [(kind, "stream") for kind in STREAM_CASES] + [(kind, "cut") for kind in STREAM_CASES]
    config = {
        "server": {"log_level": "info"},
        "retry": {"attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "providers": [
            _provider("gemini", "gemini", GEM_KEY, mock, models=["gemini-2.5-flash"]),
            _provider("claude", "claude", ANT_KEY, mock, models=[CLAUDE]),
            _provider("claude", "claude-beta", BETA_KEY, mock, headers={"Anthropic-Beta": CONFIGURED_BETA},
                      passthrough="any"),
            *[_provider(kind, err_provider(kind, tag), err_key(kind, tag), mock, passthrough="any")
              for kind, tag in tags],
        ],
        "models": [
            {"name": "gem", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "claude", "targets": [{"provider": "claude", "model": CLAUDE}]},
        ],
    }
    with Server(tmp_path_factory.mktemp("anthropic-endpoint"), config) as gateway:
        yield gateway


@pytest.fixture
def client(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)


def user(text):
    return {"role": "user", "content": text}


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"name": "get_weather", "description": "Weather for a city", "input_schema": CITY}
TIME = {"name": "get_time", "description": "Local time for a city", "input_schema": CITY}


def sse_events(resp: requests.Response) -> list[tuple[str, dict]]:
    """(event, data) pairs of an Anthropic SSE body, checking that each event's name matches its type."""
    out = []
    for block in resp.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out


# ------------------------------------------------------------------------------------ Gemini upstream


def test_message_via_gemini(client, mock):
    msg = client.messages.create(model="gem", max_tokens=64, system="Be terse.", stop_sequences=["END"],
                                 messages=[user("What is the capital of Wyoming?")],
                                 extra_body={"temperature": 0.3})  # this SDK has no sampling kwargs
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "gem"
    assert msg.id.startswith("msg_") and msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"] and "capital of Wyoming" in msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    call = mock.find(key=GEM_KEY, path="/v1beta/models/gemini-2.5-flash:generateContent")[-1]
    assert call["body"]["systemInstruction"]["parts"][0]["text"] == "Be terse."
    gen = call["body"]["generationConfig"]
    assert gen["maxOutputTokens"] == 64 and gen["temperature"] == 0.3 and gen["stopSequences"] == ["END"]


def test_stream_event_sequence_via_gemini(gw):
    resp = requests.post(gw.url + "/v1/messages", timeout=30, json={
        "model": "gem", "max_tokens": 64, "stream": True, "messages": [user("count the events")]})
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(resp)
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"} and len(names[2:-3]) >= 2
    assert events[0][1]["message"]["model"] == "gem"
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == "echo: count the events"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] > 0


def test_parallel_tool_use_streamed_via_gemini(client):
    with client.messages.stream(model="gem", max_tokens=256, tools=[WEATHER, TIME],
                                messages=[user("parallel: weather and time in Oslo")]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    calls = [b for b in final.content if b.type == "tool_use"]
    assert sorted(c.name for c in calls) == ["get_time", "get_weather"]
    assert all(c.input == {"city": "Oslo"} for c in calls) and len({c.id for c in calls}) == 2


def test_tool_round_trip_via_gemini_echoes_thought_signature(client, mock):
    messages = [user("What's the weather in Paris?")]
    first = client.messages.create(model="gem", max_tokens=256, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    tool = next(b for b in first.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id,
                                      "content": [{"type": "text", "text": '{"temp_c": 21}'}]}]},
    ]
    final = client.messages.create(model="gem", max_tokens=256, tools=[WEATHER], messages=messages)
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == 'echo: function get_weather returned {"temp_c": 21}'
    sent = mock.find(key=GEM_KEY)[-1]["body"]["contents"]
    model_turn = next(t for t in sent if t["role"] == "model")
    fc_part = next(p for p in model_turn["parts"] if "functionCall" in p)
    assert fc_part.get("thoughtSignature"), "the thought signature must survive the Anthropic round trip"
    assert sent[-1]["parts"][0]["functionResponse"]["name"] == "get_weather"


# ------------------------------------------------------------------------------ Anthropic upstream


def test_message_via_anthropic_is_a_faithful_pass_through(client, mock):
    params = {
        "model": "claude", "max_tokens": 100,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "user-42"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [user("hi"), {"role": "assistant", "content": "hello"},
                     {"role": "user", "content": [{"type": "text", "text": "say more"}]}],
    }
    extra = {"temperature": 0.2, "top_k": 5, "future_field": {"kept": True}}
    msg = client.messages.create(**params, extra_body=extra)
    call = mock.find(key=ANT_KEY, path="/v1/messages")[-1]
    assert call["body"] == {**params, **extra, "model": CLAUDE}
    assert call["headers"]["anthropic-version"] and "client-key" not in json.dumps(call["headers"])
    assert msg.model == "claude" and msg.content[0].text == "echo: say more"
    # Fields only an Anthropic upstream reports come through untouched.
    assert msg.usage.cache_creation_input_tokens == 0 and msg.usage.service_tier == "standard"


def test_stream_text_via_anthropic_pass_through(client, mock):
    params = {"model": "claude", "max_tokens": 64, "metadata": {"user_id": "user-7"},
              "messages": [user("stream please")]}
    with client.messages.stream(**params, extra_body={"top_k": 3}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream please" and final.content[0].text == text
    assert final.model == "claude" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    call = mock.find(key=ANT_KEY)[-1]
    assert call["stream"] and call["body"] == {**params, "top_k": 3, "model": CLAUDE, "stream": True}


def test_stream_events_are_relayed_as_sent(gw):
    """Pass-through streams keep Anthropic's own events and fields (ping, service_tier, cache counts)."""
    resp = requests.post(gw.url + "/v1/messages", timeout=30, headers={"x-api-key": "client-key"}, json={
        "model": "claude", "max_tokens": 64, "stream": True, "messages": [user("relay the events")]})
    events = sse_events(resp)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["model"] == "claude" and start["id"].startswith("msg_")
    assert start["usage"]["service_tier"] == "standard" and start["usage"]["cache_read_input_tokens"] == 0
    assert "".join(d["delta"].get("text", "") for e, d in events if e == "content_block_delta") == \
        "echo: relay the events"


def test_stream_tool_use_via_anthropic(client):
    with client.messages.stream(model="claude", max_tokens=256, tools=[WEATHER],
                                messages=[user("What's the weather in Lima?")]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "Lima"}


def test_tool_round_trip_via_anthropic(client, mock):
    messages = [user("What's the weather in Rome?")]
    first = client.messages.create(model="claude", max_tokens=256, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    tool = next(b for b in first.content if b.type == "tool_use")
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"}]},
    ]
    final = client.messages.create(model="claude", max_tokens=256, tools=[WEATHER], messages=messages)
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "echo: function get_weather returned sunny"
    assert mock.find(key=ANT_KEY)[-1]["body"]["messages"][1]["content"][-1]["id"] == tool.id


def test_anthropic_beta_header_reaches_the_upstream(client, mock):
    beta = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    client.messages.create(model="claude", max_tokens=16, messages=[user("beta")],
                           extra_headers={"anthropic-beta": beta})
    assert mock.find(key=ANT_KEY)[-1]["headers"]["anthropic-beta"] == beta
    with client.messages.stream(model="claude", max_tokens=16, messages=[user("beta")],
                                extra_headers={"anthropic-beta": beta}) as stream:
        stream.get_final_message()
    assert mock.find(key=ANT_KEY)[-1]["headers"]["anthropic-beta"] == beta
    # A value configured for the provider is kept, and the client's is added to it.
    client.messages.create(model=f"claude-beta/{CLAUDE}", max_tokens=16, messages=[user("beta")],
                           extra_headers={"anthropic-beta": beta})
    assert mock.find(key=BETA_KEY)[-1]["headers"]["anthropic-beta"] == f"{CONFIGURED_BETA},{beta}"
    client.messages.create(model=f"claude-beta/{CLAUDE}", max_tokens=16, messages=[user("no beta")])
    assert mock.find(key=BETA_KEY)[-1]["headers"]["anthropic-beta"] == CONFIGURED_BETA


def test_count_tokens_via_anthropic(client, mock):
    counted = client.messages.count_tokens(model="claude", system="Be terse.", tools=[WEATHER],
                                           messages=[user("how many tokens is this")])
    assert counted.input_tokens > 0
    call = mock.find(key=ANT_KEY)[-1]
    assert call["path"] == "/v1/messages/count_tokens"
    assert call["body"] == {"model": CLAUDE, "system": "Be terse.", "tools": [WEATHER],
                            "messages": [user("how many tokens is this")]}


def test_count_tokens_refused_for_other_upstreams(client, mock):
    before = mock.count(key=GEM_KEY)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.count_tokens(model="gem", messages=[user("count me")])
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "Anthropic upstream" in info.value.body["error"]["message"]
    assert mock.count(key=GEM_KEY) == before


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kind,status,exc,etype", ERROR_CASES,
                         ids=[f"{k}-{s}" for k, s, _, _ in ERROR_CASES])
def test_upstream_errors_are_typed_sdk_exceptions(client, mock, kind, status, exc, etype):
    key = err_key(kind, status)
    mock.script(key=key, behaviour=error(status, retry_delay="30s"))
    with pytest.raises(exc) as info:
        client.messages.create(model=f"{err_provider(kind, status)}/some-model", max_tokens=16,
                               messages=[user("fail")])
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == etype and body["error"]["message"]
    assert key not in info.value.response.text
    if status == 429:
        assert int(info.value.response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("kind", STREAM_CASES)
def test_stream_error_before_first_byte_is_a_typed_exception(client, mock, kind):
    mock.script(key=err_key(kind, "stream"), behaviour=error(429, retry_delay="30s"))
    with pytest.raises(anthropic.RateLimitError) as info:
        with client.messages.stream(model=f"{err_provider(kind, 'stream')}/m", max_tokens=16,
                                    messages=[user("fail")]) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("kind", STREAM_CASES)
def test_stream_cut_mid_way_ends_with_an_error_event(client, mock, kind):
    mock.script(key=err_key(kind, "cut"), behaviour=reset_after(1))
    received = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=f"{err_provider(kind, 'cut')}/m", max_tokens=16,
                                    messages=[user("a long answer please")]) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert received, "the first chunk reached the client before the upstream failed"
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "api_error"
    assert err_key(kind, "cut") not in json.dumps(info.value.body)


# ---------------------------------------------------------------------------- gateway's own errors


# Malformed JSON, invalid requests, unknown model and path: tests/inprocess/test_errors.py


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer client-key"}, {"x-api-key": "client-key"},
    {"Authorization": "Bearer client-key", "x-api-key": "client-key"}, {},
], ids=["bearer", "x-api-key", "both", "none"])
def test_client_auth_headers_are_accepted(gw, mock, headers):
    body = {"model": "claude", "max_tokens": 16, "messages": [user("auth ok")]}
    resp = requests.post(gw.url + "/v1/messages", headers={**headers, "anthropic-version": "2023-06-01"},
                         json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["text"] == "echo: auth ok"
    assert mock.find(key=ANT_KEY)[-1]["headers"]["x-api-key"] == ANT_KEY  # the client's key never goes up
