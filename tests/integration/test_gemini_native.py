"""Issue 18 (a): Google's own SDK (google-genai) → keyrelay's Gemini-native endpoint (gunicorn + gevent) →
the mock upstream over real sockets: pass-through to a Gemini upstream with a rate-limited key in the pool
(rotation visible in the mock's per-key counts), translation to an OpenAI-dialect upstream, client keys,
limits and usage, and malformed bodies answered 400 in Gemini's envelope.

The SDK is pointed at the gateway with ``http_options={"base_url": ..., "api_version": "v1beta"}``
(google-genai ``HttpOptions.base_url`` / ``api_version``: "Use a custom base URL when working with API
gateway proxy servers", https://mintlify.com/googleapis/python-genai/guides/http-options).
"""
from __future__ import annotations

import base64
import json
import sqlite3
import time

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from proxy.clients.model import config_client_id, new_key
from tests.harness import Server
from tests.mock_upstream import error, hold, reset_after, thought_signature

LIMITED = "gem-native-key-limited"  # always answers 429: the relay must rotate past it
GOOD = "gem-native-key-good"
KEYS = {"sdk": new_key(), "rpm2": new_key()}
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")},
                            required=["city"]))


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"log_level": "info"},
        "retry": {"attempts": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "providers": [
            {"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": [LIMITED, GOOD],
             "models": ["gemini-2.5-flash"]},
            {"name": "compat", "type": "openai", "base_url": mock.url + "/v1", "keys": ["sk-native-compat"]},
            {"name": "claude", "type": "anthropic", "base_url": mock.url + "/v1", "keys": ["sk-ant-native"]},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "gem-embed", "targets": [{"provider": "gemini", "model": "gemini-embedding-001"}]},
            {"name": "compat-chat", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}]},
            {"name": "compat-embed", "targets": [{"provider": "compat", "model": "text-embedding-3-small"}]},
            {"name": "claude", "targets": [{"provider": "claude", "model": "claude-3-5-haiku-latest"}]},
        ],
        "clients": [{"name": "sdk", "key": KEYS["sdk"]},
                    {"name": "rpm2", "key": KEYS["rpm2"], "rpm": 2}],
    }
    fresh(mock)
    with Server(tmp_path_factory.mktemp("gemini-native"), config) as gateway:
        yield gateway
    mock.rules.clear()


def fresh(mock) -> None:
    """Forget the recorded calls; the limited key stays limited."""
    mock.clear()
    mock.script(key=LIMITED, behaviour=error(429, retry_delay="60s"))


def sdk(gw: Server, key: str = "sdk") -> genai.Client:
    return genai.Client(api_key=KEYS.get(key, key),
                        http_options={"base_url": gw.url, "api_version": "v1beta",
                                      "retry_options": {"attempts": 1}})


def test_generate_content_through_the_pool_rotates_past_the_limited_key(gw, mock):
    fresh(mock)
    client = sdk(gw)
    for i in range(3):
        resp = client.models.generate_content(model="flash", contents=f"capital of Wyoming {i}?",
                                              config={"system_instruction": "Be terse."})
        assert f"capital of Wyoming {i}" in resp.text
        assert resp.usage_metadata.prompt_token_count > 0
    assert mock.count(key=LIMITED) >= 1  # tried, refused with 429, cooled down
    assert mock.count(key=GOOD, path="/v1beta/models/gemini-2.5-flash:generateContent") == 3
    call = mock.find(key=GOOD)[-1]
    assert call["body"]["systemInstruction"]["parts"][0]["text"] == "Be terse."  # the SDK's body, as sent
    assert KEYS["sdk"] not in json.dumps(call)  # the client key is never forwarded


def test_stream_sse_is_passed_through_event_by_event(gw, mock):
    client = sdk(gw)
    chunks = list(client.models.generate_content_stream(model="flash", contents="stream these words please"))
    assert len(chunks) == 3  # the mock's three events, one by one
    assert "stream these words please" in "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == "STOP"
    assert chunks[-1].usage_metadata.total_token_count > 0


def test_stream_is_unbuffered_and_a_late_failure_is_an_error_event(gw, mock):
    url = gw.url + "/v1beta/models/flash:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": "hold after the first event"}]}]}
    mock.script(key=GOOD, behaviour=hold("native-gate", after=1), times=1)
    with requests.post(url, json=body, headers={"x-goog-api-key": KEYS["sdk"]}, stream=True, timeout=10) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert json.loads(first[6:])["candidates"][0]["content"]["parts"][0]["text"]  # before the rest exists
        mock.release("native-gate")
        rest = [json.loads(line[6:]) for line in lines if line]
    assert len(rest) == 2 and rest[-1]["candidates"][0]["finishReason"] == "STOP"

    mock.script(key=GOOD, behaviour=reset_after(1), times=1)
    with requests.post(url, json=body, headers={"x-goog-api-key": KEYS["sdk"]}, stream=True, timeout=10) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line]
    assert "candidates" in events[0]
    assert events[-1]["error"]["code"] == 502 and events[-1]["error"]["status"] == "UNAVAILABLE"


def test_json_array_stream_without_alt_sse(gw):
    r = requests.post(gw.url + "/v1beta/models/flash:streamGenerateContent",
                      headers={"x-goog-api-key": KEYS["sdk"]},
                      json={"contents": [{"role": "user", "parts": [{"text": "array stream"}]}]}, timeout=10)
    assert r.status_code == 200, r.text
    events = r.json()
    assert isinstance(events, list) and len(events) == 3
    assert "array stream" in "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)


def test_count_tokens_and_embeddings(gw, mock):
    client = sdk(gw)
    count = client.models.count_tokens(model="flash", contents="how many tokens is this")
    assert count.total_tokens == 5
    one = client.models.embed_content(model="gem-embed", contents="hello")
    assert len(one.embeddings) == 1 and len(one.embeddings[0].values) == 8
    many = client.models.embed_content(model="gem-embed", contents=["a", "b", "c"],
                                       config={"output_dimensionality": 4})
    assert [len(e.values) for e in many.embeddings] == [4, 4, 4]
    batch = mock.find(key=GOOD, path="/v1beta/models/gemini-embedding-001:batchEmbedContents")[-1]
    assert {r["model"] for r in batch["body"]["requests"]} == {"models/gemini-embedding-001"}  # retargeted


def test_function_call_round_trip_keeps_the_thought_signature(gw, mock):
    client = sdk(gw)
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
    first = client.models.generate_content(model="flash", contents="weather in Paris", config=config)
    call = first.function_calls[0]
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    history = [types.Content(role="user", parts=[types.Part(text="weather in Paris")]),
               first.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(
                   name="get_weather", response={"temp_c": 21})])]
    fresh(mock)
    final = client.models.generate_content(model="flash", contents=history, config=config)
    assert "get_weather returned" in final.text and "21" in final.text
    sent = mock.find(key=GOOD)[-1]["thought_signatures"]
    # the signature the mock issued came back (the SDK re-encodes its bytes as URL-safe base64)
    issued = base64.b64decode(thought_signature("gemini-2.5-flash", "get_weather", {"city": "Paris"}))
    assert [base64.urlsafe_b64decode(s["signature"]) for s in sent] == [issued]


def test_translated_to_an_openai_upstream(gw, mock):
    client = sdk(gw)
    fresh(mock)
    resp = client.models.generate_content(model="compat-chat", contents="hello translated",
                                          config={"system_instruction": "Be kind.", "max_output_tokens": 40,
                                                  "temperature": 0.5})
    assert "hello translated" in resp.text
    assert resp.candidates[0].finish_reason == "STOP"
    assert resp.usage_metadata.prompt_token_count > 0 and resp.usage_metadata.total_token_count > 0
    sent = mock.find(dialect="openai")[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
    assert sent["max_tokens"] == 40 and sent["temperature"] == 0.5

    chunks = list(client.models.generate_content_stream(model="compat-chat", contents="stream translated"))
    assert "stream translated" in "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == "STOP" and chunks[-1].usage_metadata.total_token_count

    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
    first = client.models.generate_content(model="compat-chat", contents="weather in Oslo", config=config)
    call = first.function_calls[0]
    assert call.name == "get_weather" and call.args == {"city": "Oslo"}
    history = [types.Content(role="user", parts=[types.Part(text="weather in Oslo")]),
               first.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(
                   name="get_weather", response={"temp_c": 3})])]
    final = client.models.generate_content(model="compat-chat", contents=history, config=config)
    assert "get_weather returned" in final.text
    tool_msg = mock.find(dialect="openai")[-1]["body"]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == call.id

    emb = client.models.embed_content(model="compat-embed", contents=["x", "y"])
    assert len(emb.embeddings) == 2 and emb.embeddings[0].values

    with pytest.raises(genai_errors.ClientError) as exc:  # no upstream count for a non-Gemini model
        client.models.count_tokens(model="compat-chat", contents="count me")
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"


def test_translated_to_an_anthropic_upstream(gw, mock):
    client = sdk(gw)
    resp = client.models.generate_content(model="claude", contents="hello claude",
                                          config={"system_instruction": "Be brief."})
    assert "hello claude" in resp.text and resp.usage_metadata.total_token_count > 0
    assert mock.find(dialect="anthropic")[-1]["body"]["system"] == "Be brief."
    chunks = list(client.models.generate_content_stream(model="claude", contents="stream claude"))
    assert "stream claude" in "".join(c.text or "" for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == "STOP"
    count = client.models.count_tokens(model="claude", contents="count these four")  # Messages count_tokens
    assert count.total_tokens == 3 and mock.count(dialect="anthropic", path="/v1/messages/count_tokens") == 1


def test_untranslatable_parts_are_an_honest_400(gw):
    body = {"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/f.pdf",
                                                                  "mimeType": "application/pdf"}}]}]}
    r = requests.post(gw.url + "/v1beta/models/compat-chat:generateContent", json=body,
                      headers={"x-goog-api-key": KEYS["sdk"]}, timeout=10)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and "fileData" in err["message"]


def test_models_list_and_get(gw):
    client = sdk(gw)
    names = [m.name for m in client.models.list()]
    assert "models/flash" in names and "models/compat-chat" in names
    assert client.models.get(model="flash").name == "models/flash"
    with pytest.raises(genai_errors.ClientError) as exc:
        client.models.get(model="nope")
    assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"


def test_key_in_query_and_refusals_in_geminis_envelope(gw):
    url = gw.url + "/v1beta/models/flash:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert requests.post(url, params={"key": KEYS["sdk"]}, json=body, timeout=10).status_code == 200
    time.sleep(0.2)  # the request log line is written after the response
    assert KEYS["sdk"] not in gw.logs()  # the request log has the path without the query
    r = requests.post(url, json=body, timeout=10)  # no key
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = requests.post(url, headers={"x-goog-api-key": "kr-wrong"}, json=body, timeout=10)
    assert r.status_code == 401 and set(r.json()["error"]) == {"code", "message", "status"}


@pytest.mark.parametrize("body, field", [
    ({}, "contents"),
    ({"contents": "hello"}, "contents"),
    ({"contents": []}, "contents"),
    ({"contents": [{"parts": "x"}]}, "contents[0].parts"),
    ({"contents": [{"parts": [{"text": 3}]}]}, "contents[0].parts[0].text"),
    ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}, "contents[0].parts[0].functionCall.name"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": "hot"}},
     "generationConfig.temperature"),
    ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{}]}]},
     "tools[0].functionDeclarations[0].name"),
])
def test_malformed_bodies_get_400_in_geminis_envelope(gw, body, field):
    for method in ("generateContent", "streamGenerateContent"):
        r = requests.post(gw.url + f"/v1beta/models/flash:{method}", json=body,
                          headers={"x-goog-api-key": KEYS["sdk"]}, timeout=10)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT" and field in err["message"]


def test_malformed_requests_other_methods(gw):
    h = {"x-goog-api-key": KEYS["sdk"]}
    cases = [("flash:embedContent", {"content": "x"}), ("flash:batchEmbedContents", {"requests": {}}),
             ("flash:countTokens", {"contents": 1})]
    for target, body in cases:
        r = requests.post(gw.url + "/v1beta/models/" + target, json=body, headers=h, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", (target, r.text)
    r = requests.post(gw.url + "/v1beta/models/flash:generateContent", data=b"{not json", headers={
        **h, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = requests.post(gw.url + "/v1beta/models/flash:deleteEverything", json={}, headers=h, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    for hostile in ("..%2F..%2Fadmin", "a%3Fb", "a b"):  # the model name grammar still applies
        r = requests.post(gw.url + f"/v1beta/models/{hostile}:generateContent",
                          json={"contents": [{"parts": [{"text": "x"}]}]}, headers=h, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", (hostile, r.text)


def usage_rows(gw: Server, client: str, timeout: float = 10.0, n: int = 1) -> list[dict]:
    """The usage records of ``client`` once ``n`` have been written (they are batched every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(gw.config["server"]["database"]) as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM usage_records WHERE client_id=? ORDER BY id",
                                                  (config_client_id(client),))]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_client_limits_and_usage_apply(gw, mock):
    """rpm 2: the third call is a 429 in Gemini's envelope; the usage records carry the mock's counts."""
    fresh(mock)
    client = sdk(gw, "rpm2")
    first = client.models.generate_content(model="flash", contents="limit me one")
    stream = list(client.models.generate_content_stream(model="flash", contents="limit me two"))
    with pytest.raises(genai_errors.ClientError) as exc:
        client.models.generate_content(model="flash", contents="limit me three")
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    assert "rpm" in exc.value.message
    rows = usage_rows(gw, "rpm2", n=3)
    assert [r["status"] for r in rows] == [200, 200, 429]
    meta = first.usage_metadata
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (
        meta.prompt_token_count, meta.candidates_token_count)
    last = stream[-1].usage_metadata
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (
        last.prompt_token_count, last.candidates_token_count)
    assert rows[1]["stream"] == 1 and rows[0]["provider"] == "gemini" and rows[0]["model"] == "flash"
