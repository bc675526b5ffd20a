"""The response cache (issue 17) on the two later inbound dialects (issue 18): the OpenAI Responses API
(``POST /v1/responses``) and Gemini's own API (``:generateContent`` / ``:streamGenerateContent``), on a
real gunicorn keyrelay (2 gevent workers, SQLite) in front of the mock upstream over real sockets; the
mock's recorded calls say how often the upstream was asked.

For each endpoint: the same request twice is one upstream call and a HIT; a cached answer replayed as a
stream (text and a function call) matches the original through the official SDK (openai
``client.responses``, google-genai ``generate_content_stream``) and the JSON-array form; ``no-store``
bypasses and ``no-cache`` refreshes; a hit's usage record has ``cached`` 1 and ``cost_usd`` 0; an errored
stream is not cached. Responses only: a HIT is a new, stored response (``previous_response_id`` to it
works), and a ``previous_response_id`` request is keyed by the turns it resolves to, not by the id.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import openai
import pytest
import requests
from google import genai
from google.genai import types

from proxy.clients.model import new_key
from tests.harness import Server
from tests.mock_upstream import error, reset_after

ALICE, BOB = new_key(), new_key()
GEM_KEY = "gem-cache-dialects"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
GEM_WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")},
                            required=["city"]))])


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"log_level": "info"},
        "retry": {"attempts": 1},
        "providers": [
            {"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": [GEM_KEY]},
            {"name": "compat", "type": "openai", "base_url": mock.url + "/v1", "keys": ["sk-dialects-oa"]},
            {"name": "anthropic", "type": "anthropic", "base_url": mock.url + "/v1",
             "keys": ["sk-ant-dialects"]},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "compat-chat", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}]},
            {"name": "claude", "targets": [{"provider": "anthropic", "model": "claude-3-5-haiku-latest"}]},
        ],
        "clients": [{"name": "alice", "key": ALICE}, {"name": "bob", "key": BOB}],
        "prices": {"gemini-2.5-flash": {"input": 0.3, "output": 2.5},
                   "claude-3-5-haiku-latest": {"input": 0.8, "output": 4.0}},
        "cache": {"enabled": True, "ttl_s": 600},
    }
    with Server(tmp_path_factory.mktemp("cache-dialects"), config) as server:
        yield server


def unique(tag: str) -> str:
    return f"{tag} {uuid.uuid4().hex[:8]}"


def calls(mock) -> int:
    return len(mock.calls)


def usage_row(gw: Server, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = sqlite3.connect(gw.config["server"]["database"])
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM usage_records WHERE request_id = ?", (request_id,)).fetchone()
        finally:
            conn.close()
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def assert_hit_is_free(gw: Server, miss_id: str, hit_id: str) -> None:
    miss, hit = usage_row(gw, miss_id), usage_row(gw, hit_id)
    assert miss["cached"] == 0 and miss["cost_usd"] > 0 and miss["key_id"] and miss["prompt_tokens"] > 0
    assert hit["cached"] == 1 and hit["cost_usd"] == 0 and hit["key_id"] is None and hit["provider"] is None
    assert hit["status"] == 200


# ============================================================================ the Responses API


def oa(gw: Server, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def post_responses(gw: Server, payload: dict, key: str = ALICE, **headers: str) -> requests.Response:
    with requests.Session() as s:  # a fresh connection: either worker may answer
        return s.post(gw.url + "/v1/responses", json=payload, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def without_ids(response: dict) -> dict:
    """A response object minus what is new for every response (its id, item ids, creation time)."""
    out = {k: v for k, v in response.items() if k not in ("id", "created_at")}
    out["output"] = [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]
    return out


@pytest.mark.parametrize("model", ["flash", "claude"])
def test_responses_the_same_request_twice_calls_the_upstream_once(gw, mock, model):
    client = oa(gw)
    args = dict(model=model, input=unique("capital of Wyoming?"), instructions="Be terse.",
                max_output_tokens=64)
    before = calls(mock)
    first = client.responses.with_raw_response.create(**args)
    second = client.responses.with_raw_response.create(**args)
    assert first.headers["x-keyrelay-cache"] == "MISS" and second.headers["x-keyrelay-cache"] == "HIT"
    assert first.headers["x-keyrelay-cache-key"] == second.headers["x-keyrelay-cache-key"]
    assert len(second.headers["x-keyrelay-cache-key"]) == 16
    a, b = first.parse(), second.parse()
    assert b.output_text == a.output_text and "capital of Wyoming" in a.output_text
    assert b.usage == a.usage and b.status == "completed"
    assert b.id != a.id and b.id.startswith("resp_")  # a hit is a new response
    assert without_ids(b.model_dump()) == without_ids(a.model_dump())
    assert calls(mock) == before + 1
    # metadata / user are not part of the key, and the hit echoes this request's own
    third = client.responses.with_raw_response.create(**args, metadata={"run": "2"}, user="someone")
    assert third.headers["x-keyrelay-cache"] == "HIT" and third.parse().metadata == {"run": "2"}
    # any field that changes the answer is another entry; so is the same body at /v1/chat/completions
    other = client.responses.with_raw_response.create(**{**args, "max_output_tokens": 65})
    assert other.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 2
    chat = requests.post(gw.url + "/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {ALICE}"},
                         json={"model": model, "messages": [{"role": "system", "content": "Be terse."},
                                                            {"role": "user", "content": args["input"]}],
                               "max_tokens": 64})
    assert chat.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 3
    # another client key does not see alice's entry (scope: client)
    assert post_responses(gw, args, key=BOB).headers["x-keyrelay-cache"] == "MISS"


def collect_events(stream) -> tuple[list[str], dict]:
    """The event types of a Responses stream and its final response (as a dict)."""
    kinds, final = [], None
    for event in stream:
        kinds.append(event.type)
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response.model_dump()
    assert final is not None
    return kinds, final


@pytest.mark.parametrize("model", ["flash", "claude"])
@pytest.mark.parametrize("kind", ["text", "tool"])
def test_responses_stream_replay_matches_the_original(gw, mock, model, kind):
    client = oa(gw)
    extra = {"tools": [WEATHER]} if kind == "tool" else {}
    question = f"{uuid.uuid4().hex[:8]} weather in Paris"
    args = dict(model=model, input=[{"role": "user", "content": question}], **extra)
    before = calls(mock)
    raw = client.responses.with_raw_response.create(**args, stream=True)
    assert raw.headers["x-keyrelay-cache"] == "MISS"
    kinds, original = collect_events(raw.parse())
    raw = client.responses.with_raw_response.create(**args, stream=True)
    assert raw.headers["x-keyrelay-cache"] == "HIT"
    replayed_kinds, replayed = collect_events(raw.parse())
    assert calls(mock) == before + 1
    assert without_ids(replayed) == without_ids(original)
    assert replayed_kinds[:2] == ["response.created", "response.in_progress"]
    assert replayed_kinds[-1] == "response.completed" and original["usage"]["total_tokens"] > 0
    if kind == "tool":
        call = original["output"][-1]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        assert "response.function_call_arguments.delta" in replayed_kinds
        assert replayed_kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                                       "response.completed"]
    else:
        assert "weather in Paris" in original["output"][0]["content"][0]["text"]
        assert replayed_kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                                       "response.output_item.done", "response.completed"]
    # the SDK's stream helper accumulates the replay into the same answer; the JSON request hits too
    with client.responses.stream(**args) as stream:
        helper = stream.get_final_response()
    assert helper.output_text == "".join(c["text"] for item in original["output"] if item["type"] == "message"
                                         for c in item["content"])
    assert [(c.call_id, c.name, c.arguments) for c in helper.output if c.type == "function_call"] == [
        (c["call_id"], c["name"], c["arguments"]) for c in original["output"] if c["type"] == "function_call"]
    whole = client.responses.with_raw_response.create(**args)
    assert whole.headers["x-keyrelay-cache"] == "HIT"
    assert without_ids(whole.parse().model_dump()) == without_ids(original)
    assert calls(mock) == before + 1


def test_responses_no_store_bypasses_and_no_cache_refreshes(gw, mock):
    req = {"model": "flash", "input": unique("bypass me")}
    before = calls(mock)
    bypass = post_responses(gw, req, **{"Cache-Control": "no-store"})
    assert bypass.status_code == 200 and bypass.headers["x-keyrelay-cache"] == "BYPASS"
    assert "x-keyrelay-cache-key" not in bypass.headers
    assert post_responses(gw, req).headers["x-keyrelay-cache"] == "MISS"  # the bypass stored nothing
    assert calls(mock) == before + 2
    refresh = post_responses(gw, req, **{"Cache-Control": "no-cache"})
    assert refresh.headers["x-keyrelay-cache"] == "REFRESH" and calls(mock) == before + 3
    assert post_responses(gw, req).headers["x-keyrelay-cache"] == "HIT" and calls(mock) == before + 3
    bad = post_responses(gw, req, **{"x-keyrelay-cache-ttl": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-keyrelay-cache-ttl"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses_a_hit_is_recorded_as_cached_and_free(gw, stream):
    req = {"model": "flash", "input": unique("usage"), "stream": stream}
    miss_id, hit_id = uuid.uuid4().hex, uuid.uuid4().hex
    assert post_responses(gw, req, **{"X-Request-ID": miss_id}).headers["x-keyrelay-cache"] == "MISS"
    assert post_responses(gw, req, **{"X-Request-ID": hit_id}).headers["x-keyrelay-cache"] == "HIT"
    assert_hit_is_free(gw, miss_id, hit_id)


def test_responses_an_errored_stream_is_not_cached(gw, mock):
    req = {"model": "flash", "input": unique("cut stream please"), "stream": True}
    mock.script(key=GEM_KEY, behaviour=reset_after(1), times=1)
    with requests.post(gw.url + "/v1/responses", json=req, stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {ALICE}"}) as r:
        assert r.headers["x-keyrelay-cache"] == "MISS"
        text = r.text
    assert "response.failed" in text and "response.completed" not in text
    before = calls(mock)
    again = post_responses(gw, req)
    assert again.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1
    assert "response.completed" in again.text
    assert post_responses(gw, req).headers["x-keyrelay-cache"] == "HIT"  # the complete one was stored
    # an upstream error (non-stream) is not stored either
    plain = {"model": "flash", "input": unique("upstream error")}
    mock.script(key=GEM_KEY, behaviour=error(400), times=1)
    assert post_responses(gw, plain).status_code == 400
    ok = post_responses(gw, plain)
    assert ok.status_code == 200 and ok.headers["x-keyrelay-cache"] == "MISS"


def test_responses_a_hit_is_stored_and_previous_response_id_is_keyed_by_its_turns(gw, mock):
    client = oa(gw)
    args = dict(model="flash", input=unique("remember the number 7"))
    first = client.responses.create(**args)
    hit = client.responses.with_raw_response.create(**args)
    assert hit.headers["x-keyrelay-cache"] == "HIT"
    second = hit.parse()
    # store (the default) holds on a hit: the new response can be fetched and continued
    assert client.responses.retrieve(second.id).output_text == second.output_text
    before = calls(mock)
    follow = client.responses.with_raw_response.create(model="flash", input="and the number?",
                                                       previous_response_id=second.id)
    assert follow.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1
    sent = mock.calls[-1]["body"]["contents"]
    assert args["input"] in json.dumps(sent) and len(sent) == 3  # the earlier turns went upstream
    # the same turns through the other id (the same conversation): a HIT; the key is the turns
    again = client.responses.with_raw_response.create(model="flash", input="and the number?",
                                                      previous_response_id=first.id)
    assert again.headers["x-keyrelay-cache"] == "HIT" and calls(mock) == before + 1
    assert again.parse().previous_response_id == first.id
    assert again.parse().output_text == follow.parse().output_text
    # other earlier turns: another entry
    other = client.responses.create(model="flash", input=unique("remember the number 8"))
    moved = client.responses.with_raw_response.create(model="flash", input="and the number?",
                                                      previous_response_id=other.id)
    assert moved.headers["x-keyrelay-cache"] == "MISS"
    # a streamed hit (no upstream call) is stored too
    before = calls(mock)
    with client.responses.stream(**args) as stream:
        streamed = stream.get_final_response()
    assert streamed.id not in (first.id, second.id) and calls(mock) == before
    assert client.responses.retrieve(streamed.id).output_text == first.output_text
    # store: false on a hit keeps nothing
    unstored = client.responses.create(**args, store=False)
    unstored_hit = client.responses.with_raw_response.create(**args, store=False)
    assert unstored_hit.headers["x-keyrelay-cache"] == "HIT"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored_hit.parse().id)
    assert unstored.output_text == first.output_text


# ============================================================================ Gemini's own API


def gem(gw: Server) -> genai.Client:
    return genai.Client(api_key=ALICE, http_options={"base_url": gw.url, "api_version": "v1beta",
                                                     "retry_options": {"attempts": 1}})


def gem_post(gw: Server, model: str, method: str, payload: dict, query: str = "", **headers: str
             ) -> requests.Response:
    with requests.Session() as s:
        return s.post(f"{gw.url}/v1beta/models/{model}:{method}{query}", json=payload, timeout=30,
                      headers={"x-goog-api-key": ALICE, **headers})


def gem_body(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def summary(chunks: list[types.GenerateContentResponse]) -> dict:
    """What a streamed Gemini answer says: the text, the function calls, the finish reason, the usage."""
    calls_ = [(c.name, c.args) for chunk in chunks for c in chunk.function_calls or []]
    signatures = [p.thought_signature for chunk in chunks for cand in chunk.candidates or []
                  for p in (cand.content.parts or []) if p.function_call]
    last = chunks[-1]
    return {"text": "".join(c.text or "" for c in chunks if not c.function_calls), "calls": calls_,
            "signatures": signatures, "finish": last.candidates[0].finish_reason,
            "usage": last.usage_metadata.model_dump()}


@pytest.mark.parametrize("model", ["flash", "compat-chat"], ids=["native", "translated"])
def test_gemini_the_same_request_twice_calls_the_upstream_once(gw, mock, model):
    client = gem(gw)
    text = unique("capital of Wyoming?")
    before = calls(mock)
    first = client.models.generate_content(model=model, contents=text, config={"max_output_tokens": 64})
    second = client.models.generate_content(model=model, contents=text, config={"max_output_tokens": 64})
    assert first.sdk_http_response.headers["x-keyrelay-cache"] == "MISS"
    assert second.sdk_http_response.headers["x-keyrelay-cache"] == "HIT"
    assert (first.sdk_http_response.headers["x-keyrelay-cache-key"]
            == second.sdk_http_response.headers["x-keyrelay-cache-key"])
    assert second.text == first.text and text in first.text
    assert second.model_dump(exclude={"sdk_http_response"}) == first.model_dump(exclude={"sdk_http_response"})
    assert calls(mock) == before + 1
    # the model in the path is part of the key; so is every body field
    other = client.models.generate_content(model=model, contents=text, config={"max_output_tokens": 65})
    assert other.sdk_http_response.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 2


@pytest.mark.parametrize("model", ["flash", "compat-chat"], ids=["native", "translated"])
@pytest.mark.parametrize("kind", ["text", "tool"])
def test_gemini_stream_replay_matches_the_original(gw, mock, model, kind):
    client = gem(gw)
    config = types.GenerateContentConfig(tools=[GEM_WEATHER] if kind == "tool" else None)
    text = f"{uuid.uuid4().hex[:8]} weather in Paris"
    before = calls(mock)
    original = list(client.models.generate_content_stream(model=model, contents=text, config=config))
    assert original[0].sdk_http_response.headers["x-keyrelay-cache"] == "MISS"
    replayed = list(client.models.generate_content_stream(model=model, contents=text, config=config))
    assert replayed[0].sdk_http_response.headers["x-keyrelay-cache"] == "HIT"
    assert summary(replayed) == summary(original) and calls(mock) == before + 1
    want = summary(original)
    if kind == "tool":
        assert want["calls"] == [("get_weather", {"city": "Paris"})]
    else:
        assert "weather in Paris" in want["text"]
    assert want["finish"] == "STOP" and want["usage"]["total_token_count"] > 0
    # the same entry answers generateContent and the JSON-array stream (without alt=sse)
    whole = client.models.generate_content(model=model, contents=text, config=config)
    assert whole.sdk_http_response.headers["x-keyrelay-cache"] == "HIT"
    assert summary([whole]) == want
    assert calls(mock) == before + 1


def gem_summary(events: list[dict]) -> dict:
    """What a streamed Gemini answer (the wire events) says."""
    parts = [p for e in events for c in e.get("candidates") or [] for p in c["content"].get("parts") or []]
    return {"text": "".join(p.get("text", "") for p in parts),
            "calls": [p["functionCall"] for p in parts if "functionCall" in p],
            "finish": events[-1]["candidates"][0]["finishReason"], "usage": events[-1]["usageMetadata"]}


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("kind", ["text", "tool"])
def test_gemini_json_array_replay_matches_the_sse_original(gw, mock, kind):
    body = gem_body(f"{uuid.uuid4().hex[:8]} weather in Paris")
    if kind == "tool":
        body["tools"] = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                                                    "parameters": {"type": "OBJECT", "properties": {
                                                        "city": {"type": "STRING"}}}}]}]
    before = calls(mock)
    sse = gem_post(gw, "flash", "streamGenerateContent", body, "?alt=sse")
    assert sse.headers["x-keyrelay-cache"] == "MISS"
    array = gem_post(gw, "flash", "streamGenerateContent", body)
    assert array.headers["x-keyrelay-cache"] == "HIT" and array.headers["content-type"].startswith(
        "application/json")
    replayed_sse = gem_post(gw, "flash", "streamGenerateContent", body, "?alt=sse")
    assert replayed_sse.headers["x-keyrelay-cache"] == "HIT" and calls(mock) == before + 1
    original = gem_summary(sse_events(sse.text))
    assert gem_summary(array.json()) == original == gem_summary(sse_events(replayed_sse.text))
    assert bool(original["calls"]) == (kind == "tool")


def test_gemini_no_store_bypasses_and_no_cache_refreshes(gw, mock):
    body = gem_body(unique("bypass me"))
    before = calls(mock)
    bypass = gem_post(gw, "flash", "generateContent", body, **{"Cache-Control": "no-store"})
    assert bypass.status_code == 200 and bypass.headers["x-keyrelay-cache"] == "BYPASS"
    assert "x-keyrelay-cache-key" not in bypass.headers
    assert gem_post(gw, "flash", "generateContent", body).headers["x-keyrelay-cache"] == "MISS"
    assert calls(mock) == before + 2
    refresh = gem_post(gw, "flash", "streamGenerateContent", body, "?alt=sse",
                       **{"Cache-Control": "no-cache"})
    assert refresh.headers["x-keyrelay-cache"] == "REFRESH" and calls(mock) == before + 3
    assert gem_post(gw, "flash", "generateContent", body).headers["x-keyrelay-cache"] == "HIT"
    assert calls(mock) == before + 3
    bad = gem_post(gw, "flash", "generateContent", body, **{"x-keyrelay-cache-ttl": "-1"})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    # countTokens and embeddings are not cached (no header at all)
    count = gem_post(gw, "flash", "countTokens", body)
    assert count.status_code == 200 and "x-keyrelay-cache" not in count.headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gemini_a_hit_is_recorded_as_cached_and_free(gw, stream):
    body = gem_body(unique("usage"))
    method, query = ("streamGenerateContent", "?alt=sse") if stream else ("generateContent", "")
    miss_id, hit_id = uuid.uuid4().hex, uuid.uuid4().hex
    miss = gem_post(gw, "flash", method, body, query, **{"X-Request-ID": miss_id})
    hit = gem_post(gw, "flash", method, body, query, **{"X-Request-ID": hit_id})
    assert (miss.headers["x-keyrelay-cache"], hit.headers["x-keyrelay-cache"]) == ("MISS", "HIT")
    assert_hit_is_free(gw, miss_id, hit_id)


@pytest.mark.parametrize("query", ["?alt=sse", ""], ids=["sse", "json-array"])
def test_gemini_an_errored_stream_is_not_cached(gw, mock, query):
    body = gem_body(unique("cut stream please"))
    mock.script(key=GEM_KEY, behaviour=reset_after(1), times=1)
    cut = gem_post(gw, "flash", "streamGenerateContent", body, query)
    assert cut.headers["x-keyrelay-cache"] == "MISS" and '"UNAVAILABLE"' in cut.text
    before = calls(mock)
    again = gem_post(gw, "flash", "streamGenerateContent", body, query)
    assert again.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1
    assert '"error"' not in again.text and '"finishReason"' in again.text
    assert gem_post(gw, "flash", "generateContent", body).headers["x-keyrelay-cache"] == "HIT"
    # an upstream error (non-stream) is not stored either
    plain = gem_body(unique("upstream error"))
    mock.script(key=GEM_KEY, behaviour=error(400), times=1)
    assert gem_post(gw, "flash", "generateContent", plain).status_code == 400
    ok = gem_post(gw, "flash", "generateContent", plain)
    assert ok.status_code == 200 and ok.headers["x-keyrelay-cache"] == "MISS"
