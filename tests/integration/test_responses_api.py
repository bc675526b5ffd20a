"""Issue 18 (b): the openai SDK's ``client.responses`` → keyrelay's Responses API (gunicorn + gevent) → the
mock Gemini and Anthropic upstreams over real sockets: text, a function call round trip through
``function_call_output``, ``previous_response_id`` (stored per client key), ``text.format`` json_schema,
both whole and streamed; GET / DELETE of stored responses; client limits and usage; malformed bodies
answered 400 in OpenAI's envelope."""
from __future__ import annotations

import json
import sqlite3
import time

import openai
import pytest
import requests

from proxy.clients.model import config_client_id, new_key
from tests.harness import Server
from tests.mock_upstream import reset_after

KEYS = {"alice": new_key(), "bob": new_key(), "rpm2": new_key()}
MODELS = ["flash", "claude"]  # a Gemini and an Anthropic upstream
UPSTREAM = {"flash": "gemini", "claude": "anthropic"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SCHEMA = {"type": "json_schema", "name": "echo", "strict": True,
          "schema": {"type": "object", "properties": {"echo": {"type": "string"}, "images": {
              "type": "array", "items": {"type": "string"}}}, "required": ["echo", "images"],
              "additionalProperties": False}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"log_level": "info"},
        "providers": [
            {"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": ["gem-responses"]},
            {"name": "anthropic", "type": "anthropic", "base_url": mock.url + "/v1",
             "keys": ["sk-ant-responses"]},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "claude", "targets": [{"provider": "anthropic", "model": "claude-3-5-haiku-latest"}]},
        ],
        "clients": [{"name": "alice", "key": KEYS["alice"]}, {"name": "bob", "key": KEYS["bob"]},
                    {"name": "rpm2", "key": KEYS["rpm2"], "rpm": 2}],
    }
    with Server(tmp_path_factory.mktemp("responses"), config) as gateway:
        yield gateway


def sdk(gw: Server, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS[who], max_retries=0)


def last_call(mock, model: str) -> dict:
    return mock.find(dialect=UPSTREAM[model])[-1]


@pytest.mark.parametrize("model", MODELS)
def test_text(gw, mock, model):
    client = sdk(gw)
    resp = client.responses.create(model=model, input="capital of Wyoming?", instructions="Be terse.",
                                   max_output_tokens=64, temperature=0.3)
    assert resp.object == "response" and resp.status == "completed" and resp.id.startswith("resp_")
    assert "capital of Wyoming" in resp.output_text
    assert resp.output[0].type == "message" and resp.output[0].content[0].type == "output_text"
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    body = last_call(mock, model)["body"]
    if model == "flash":
        assert body["systemInstruction"]["parts"][0]["text"] == "Be terse."
        assert body["generationConfig"]["maxOutputTokens"] == 64
    else:
        assert body["system"] in ("Be terse.", [{"type": "text", "text": "Be terse."}])
        assert body["max_tokens"] == 64


@pytest.mark.parametrize("model", MODELS)
def test_stream_text_events_in_order(gw, model):
    client = sdk(gw)
    with client.responses.stream(model=model, input="stream these words please") as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"]
    assert events[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert events.count("response.output_text.delta") >= 2
    assert events[-4:] == ["response.output_text.done", "response.content_part.done",
                           "response.output_item.done", "response.completed"]
    assert "stream these words please" in final.output_text
    assert final.usage.total_tokens > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_function_call_round_trip(gw, mock, model, stream):
    client = sdk(gw)
    question = [{"role": "user", "content": "weather in Paris"}]
    if stream:
        with client.responses.stream(model=model, input=question, tools=[WEATHER]) as s:
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    else:
        first = client.responses.create(model=model, input=question, tools=[WEATHER], tool_choice="auto")
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    follow = [*question, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                          "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 21})}]
    final = client.responses.create(model=model, input=follow, tools=[WEATHER], store=False)
    assert "get_weather returned" in final.output_text and "21" in final.output_text
    if model == "flash":  # Gemini's thoughtSignature travelled in the call id and came back
        sent = last_call(mock, model)["thought_signatures"]
        assert sent and all(s["known"] for s in sent)


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_replays_the_earlier_turns(gw, mock, model):
    client = sdk(gw)
    first = client.responses.create(model=model, input="remember the word avocado")
    with client.responses.stream(model=model, input="what was the word?", previous_response_id=first.id) as s:
        second = s.get_final_response()
    third = client.responses.create(model=model, input="and now?", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    body = last_call(mock, model)["body"]
    sent = json.dumps(body)
    for earlier in ("remember the word avocado", "what was the word?", first.output_text, second.output_text):
        assert json.dumps(earlier)[1:-1] in sent
    # stored per client key, served by GET, gone after DELETE
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    with pytest.raises(openai.NotFoundError):
        sdk(gw, "bob").responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(gw, "bob").responses.create(model=model, input="x", previous_response_id=first.id)
    assert exc.value.code == "previous_response_not_found"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_text_format_json_schema(gw, mock, model, stream):
    client = sdk(gw)
    if stream:
        with client.responses.stream(model=model, input="json please", text={"format": SCHEMA}) as s:
            resp = s.get_final_response()
    else:
        resp = client.responses.create(model=model, input="json please", text={"format": SCHEMA})
    answer = json.loads(resp.output_text)
    assert set(answer) == {"echo", "images"} and "please" in answer["echo"]
    assert resp.text.format.type == "json_schema"
    body = last_call(mock, model)["body"]
    if model == "flash":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseSchema"]["required"] == ["echo", "images"]
    else:  # the Messages API is asked for the schema as one forced tool call
        assert body["tool_choice"] == {"type": "tool", "name": "echo"}
        assert body["tools"][0]["input_schema"]["required"] == ["echo", "images"]


@pytest.mark.parametrize("model", MODELS)
def test_a_failure_after_the_first_event_is_response_failed(gw, mock, model):
    mock.script(dialect=UPSTREAM[model], behaviour=reset_after(1), times=1)
    body = {"model": model, "input": "cut me short", "stream": True}
    with requests.post(gw.url + "/v1/responses", json=body,
                       headers={"Authorization": f"Bearer {KEYS['alice']}"}, stream=True, timeout=10) as r:
        kinds = [line[7:].decode() for line in r.iter_lines() if line.startswith(b"event: ")]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds


def test_store_false_is_not_kept(gw):
    client = sdk(gw)
    resp = client.responses.create(model="flash", input="forget me", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


def usage_rows(gw: Server, client: str, n: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(gw.config["server"]["database"]) as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM usage_records WHERE client_id=? ORDER BY id",
                                                  (config_client_id(client),))]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_client_limits_and_usage_apply(gw):
    """rpm 2: the third call is a 429 in OpenAI's envelope; the usage records carry the upstream's counts."""
    client = sdk(gw, "rpm2")
    first = client.responses.create(model="claude", input="limit me one")
    with client.responses.stream(model="flash", input="limit me two") as s:
        second = s.get_final_response()
    with pytest.raises(openai.RateLimitError) as exc:
        client.responses.create(model="flash", input="limit me three")
    assert exc.value.status_code == 429 and "rpm" in exc.value.body["message"]
    assert exc.value.response.headers["Retry-After"]
    rows = usage_rows(gw, "rpm2", 3)
    assert [(r["status"], r["endpoint"]) for r in rows] == [(200, "/v1/responses")] * 2 + [
        (429, "/v1/responses")]
    for row, resp in zip(rows, (first, second), strict=False):
        assert (row["prompt_tokens"], row["completion_tokens"]) == (resp.usage.input_tokens,
                                                                    resp.usage.output_tokens)
    assert rows[1]["stream"] == 1 and rows[0]["provider"] == "anthropic" and rows[1]["provider"] == "gemini"


@pytest.mark.parametrize("body, param", [
    ({}, "model"),
    ({"model": "flash"}, "input"),
    ({"model": "flash", "input": 3}, "input"),
    ({"model": "flash", "input": []}, "input"),
    ({"model": "flash", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"model": "flash", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "input[0].content[0].type"),
    ({"model": "flash", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "flash", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": "flash", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "flash", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "flash", "input": "x", "max_output_tokens": "lots"}, "max_output_tokens"),
    ({"model": "flash", "input": "x", "temperature": 9}, "temperature"),
    ({"model": "flash", "input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema"),
    ({"model": "flash", "input": "x", "stream": "yes"}, "stream"),
    ({"model": "flash", "input": "x", "previous_response_id": 7}, "previous_response_id"),
    ({"model": "flash", "input": "x", "frobnicate": True}, "frobnicate"),
    ({"model": "../etc", "input": "x"}, "model"),
])
def test_malformed_bodies_get_400_in_openais_envelope(gw, body, param):
    r = requests.post(gw.url + "/v1/responses", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err


def test_unknown_previous_response_and_auth(gw):
    h = {"Authorization": f"Bearer {KEYS['alice']}"}
    body = {"model": "flash", "input": "x", "previous_response_id": "resp_nope"}
    r = requests.post(gw.url + "/v1/responses", json=body, headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "previous_response_not_found"
    assert requests.get(gw.url + "/v1/responses/resp_nope", headers=h, timeout=10).status_code == 404
    assert requests.delete(gw.url + "/v1/responses/resp_nope", headers=h, timeout=10).status_code == 404
    r = requests.post(gw.url + "/v1/responses", json={"model": "flash", "input": "x"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
