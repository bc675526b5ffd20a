"""Issue 17, the response cache, on a real gunicorn keyrelay (2 gevent workers, SQLite) in front of the
mock upstream over real sockets; the mock's recorded calls say how often the upstream was asked.

1. the same request twice: one upstream call, the second a HIT; any one answer field changed: MISS;
   ``Cache-Control: no-store`` / ``no-cache``;
2. ``scope: client`` keeps two client keys apart, ``scope: shared`` (a model's override) does not;
3. TTL expiry and LRU eviction at ``max_entries``, served by both workers, and after a restart;
4. cached answers replayed as streams through the openai SDK (text, a tool call) and the anthropic SDK
   (native and translated) match the originals; an errored stream is not cached;
5. a hit's usage record: ``cached`` 1, ``cost_usd`` 0, no upstream key.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import anthropic
import openai
import pytest
import requests

from proxy.cache.service import FLUSH_INTERVAL_S
from proxy.clients.model import new_key
from tests.harness import Server
from tests.mock_upstream import error, reset_after

TOKEN = "cache-admin-token"
ALICE, BOB = new_key(), new_key()
OA_MODEL, AN_MODEL = "gpt-4o-mini", "claude-3-5-haiku-latest"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"admin_token": TOKEN, "log_level": "info"},
        "retry": {"attempts": 1},
        "providers": [
            {"name": "oa", "type": "openai", "base_url": mock.url + "/v1", "keys": ["sk-cache-oa"]},
            {"name": "an", "type": "anthropic", "base_url": mock.url + "/v1", "keys": ["sk-ant-cache"]},
        ],
        "models": [
            {"name": "chat", "targets": [{"provider": "oa", "model": OA_MODEL}]},
            {"name": "chat-alt", "targets": [{"provider": "oa", "model": OA_MODEL}]},
            {"name": "chat-shared", "targets": [{"provider": "oa", "model": OA_MODEL}],
             "cache": {"scope": "shared"}},
            {"name": "chat-off", "targets": [{"provider": "oa", "model": OA_MODEL}],
             "cache": {"enabled": False}},
            {"name": "claude", "targets": [{"provider": "an", "model": AN_MODEL}]},
        ],
        "clients": [{"name": "alice", "key": ALICE}, {"name": "bob", "key": BOB}],
        "prices": {OA_MODEL: {"input": 0.5, "output": 1.5}},
        "cache": {"enabled": True, "ttl_s": 600},
    }
    with Server(tmp_path_factory.mktemp("cache"), config) as server:
        yield server


def body(text: str, **extra: object) -> dict:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}


def post(gw: Server, payload: dict, key: str = ALICE, path: str = "/v1/chat/completions",
         **headers: str) -> requests.Response:
    """One request on a fresh connection (so either worker may answer it)."""
    with requests.Session() as s:
        return s.post(gw.url + path, json=payload, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def calls(mock) -> int:
    return len(mock.calls)


def unique(tag: str) -> str:
    return f"{tag} {uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------- 1. the key


def test_the_same_request_twice_calls_the_upstream_once(gw, mock):
    req = body(unique("twice"), max_tokens=50)
    before = calls(mock)
    first, second = post(gw, req), post(gw, req)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-keyrelay-cache"] == "MISS" and second.headers["x-keyrelay-cache"] == "HIT"
    assert first.headers["x-keyrelay-cache-key"] == second.headers["x-keyrelay-cache-key"]
    assert len(first.headers["x-keyrelay-cache-key"]) == 16
    assert second.json() == first.json()
    assert calls(mock) == before + 1
    # the delivery-only fields are not part of the key
    third = post(gw, {**req, "user": "someone", "metadata": {"run": "1"}})
    assert third.headers["x-keyrelay-cache"] == "HIT" and calls(mock) == before + 1


VARIANTS = [
    ("model", "chat-alt"),
    ("messages", [{"role": "user", "content": "something else entirely"}]),
    ("max_tokens", 51),
    ("tool_choice", "none"),
    ("response_format", {"type": "json_object"}),
    ("seed", 42),
    ("temperature", 0),  # omitted is not the same as 0
]


@pytest.mark.parametrize("field,value", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_changing_one_field_is_a_miss(gw, mock, field, value):
    req = body(unique(f"variant {field}"), max_tokens=50)
    assert post(gw, req).headers["x-keyrelay-cache"] == "MISS"
    assert post(gw, req).headers["x-keyrelay-cache"] == "HIT"
    before = calls(mock)
    changed = post(gw, {**req, field: value})
    assert changed.status_code == 200, changed.text
    assert changed.headers["x-keyrelay-cache"] == "MISS"
    assert changed.headers["x-keyrelay-cache-key"] != post(gw, req).headers["x-keyrelay-cache-key"]
    assert calls(mock) == before + 1


def test_no_store_bypasses_and_no_cache_refreshes(gw, mock):
    req = body(unique("directives"))
    before = calls(mock)
    bypass = post(gw, req, **{"Cache-Control": "no-store"})
    assert bypass.headers["x-keyrelay-cache"] == "BYPASS" and "x-keyrelay-cache-key" not in bypass.headers
    assert post(gw, req).headers["x-keyrelay-cache"] == "MISS"  # the bypass stored nothing
    assert post(gw, req, **{"Cache-Control": "no-store"}).headers["x-keyrelay-cache"] == "BYPASS"
    assert calls(mock) == before + 3  # and looked nothing up
    mock.script(model=OA_MODEL, behaviour={"text": "a fresher answer"}, times=1)
    refresh = post(gw, req, **{"Cache-Control": "no-cache"})
    assert refresh.headers["x-keyrelay-cache"] == "REFRESH" and calls(mock) == before + 4
    hit = post(gw, req)
    assert hit.headers["x-keyrelay-cache"] == "HIT" and calls(mock) == before + 4
    assert hit.json()["choices"][0]["message"]["content"] == "a fresher answer"  # the refreshed answer


def test_a_model_without_cache_bypasses(gw, mock):
    req = {**body(unique("off")), "model": "chat-off"}
    before = calls(mock)
    assert [post(gw, req).headers["x-keyrelay-cache"] for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert calls(mock) == before + 2


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_bad_ttl_header_is_the_client_s_400(gw, path):
    req = {**body("ttl"), "max_tokens": 10}
    r = post(gw, req, path=path, **{"x-keyrelay-cache-ttl": "soon"})
    assert r.status_code == 400
    assert "x-keyrelay-cache-ttl" in r.text and ("invalid_request_error" in r.text)


# ------------------------------------------------------------------------------------------- 2. scope


def test_scope_client_keeps_clients_apart_and_shared_does_not(gw, mock):
    private = body(unique("scope"))
    assert post(gw, private, ALICE).headers["x-keyrelay-cache"] == "MISS"
    assert post(gw, private, BOB).headers["x-keyrelay-cache"] == "MISS"  # bob never sees alice's entry
    assert post(gw, private, ALICE).headers["x-keyrelay-cache"] == "HIT"
    assert post(gw, private, BOB).headers["x-keyrelay-cache"] == "HIT"  # his own
    shared = {**body(unique("scope shared")), "model": "chat-shared"}
    before = calls(mock)
    assert post(gw, shared, ALICE).headers["x-keyrelay-cache"] == "MISS"
    assert post(gw, shared, BOB).headers["x-keyrelay-cache"] == "HIT"
    assert calls(mock) == before + 1


# ------------------------------------------------------------------------------------------- 4. streams


def oa_client(gw: Server, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def collect(stream) -> dict:  # noqa: ANN001 - an openai.Stream of chunks
    """What a client makes of an SDK stream: text, tool calls, finish reason, usage."""
    text, tools, finish, usage = "", {}, None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                have = tools.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                have["id"] = call.id or have["id"]
                if call.function:
                    have["name"] += call.function.name or ""
                    have["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return {"text": text, "tools": [tools[i] for i in sorted(tools)], "finish": finish, "usage": usage}


@pytest.mark.parametrize("kind", ["text", "tool"])
def test_openai_sdk_stream_replay_matches_the_original(gw, mock, kind):
    client = oa_client(gw)
    extra = {"tools": TOOLS} if kind == "tool" else {}
    args = dict(model="chat", messages=[{"role": "user", "content": unique(f"weather in Paris {kind}")}],
                stream=True, stream_options={"include_usage": True}, **extra)
    before = calls(mock)
    raw = client.chat.completions.with_raw_response.create(**args)
    assert raw.headers["x-keyrelay-cache"] == "MISS"
    original = collect(raw.parse())
    raw = client.chat.completions.with_raw_response.create(**args)
    assert raw.headers["x-keyrelay-cache"] == "HIT"
    replayed = collect(raw.parse())
    assert replayed == original and calls(mock) == before + 1
    if kind == "tool":
        assert original["finish"] == "tool_calls" and original["tools"][0]["name"] == "get_weather"
        assert json.loads(original["tools"][0]["arguments"])
    else:
        assert original["finish"] == "stop" and original["text"]
    assert original["usage"]["total_tokens"] > 0
    # the same entry answers the non-stream request, and a stream without include_usage has no usage
    whole = client.chat.completions.with_raw_response.create(
        **{k: v for k, v in args.items() if k not in ("stream", "stream_options")})
    assert whole.headers["x-keyrelay-cache"] == "HIT"
    message = whole.parse().choices[0].message
    assert (message.content or "") == original["text"]
    arguments = [c.function.arguments for c in message.tool_calls or []]
    assert arguments == [t["arguments"] for t in original["tools"]]
    plain = collect(client.chat.completions.create(**{**args, "stream_options": None}))
    assert plain["usage"] is None and plain["text"] == original["text"] and calls(mock) == before + 1


@pytest.mark.parametrize("model,kind", [("claude", "text"), ("claude", "tool"), ("chat", "text")],
                         ids=["native-text", "native-tool", "translated-text"])
def test_anthropic_sdk_stream_replay_matches_the_original(gw, mock, model, kind):
    client = anthropic.Anthropic(base_url=gw.url, api_key=ALICE, max_retries=0)
    tools = [{"name": "get_weather", "description": "weather",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    args = dict(model=model, max_tokens=100, messages=[{"role": "user", "content": unique("Paris weather")}],
                **({"tools": tools} if kind == "tool" else {}))
    before = calls(mock)
    with client.messages.stream(**args) as stream:
        assert stream.response.headers["x-keyrelay-cache"] == "MISS"
        original = stream.get_final_message()
    with client.messages.stream(**args) as stream:
        assert stream.response.headers["x-keyrelay-cache"] == "HIT"
        replayed = stream.get_final_message()
    assert replayed.model_dump() == original.model_dump()
    assert calls(mock) == before + 1
    if kind == "tool":
        assert original.stop_reason == "tool_use" and original.content[-1].type == "tool_use"
    whole = client.messages.with_raw_response.create(**args)
    assert whole.headers["x-keyrelay-cache"] == "HIT"
    assert whole.parse().model_dump() == original.model_dump()


def test_an_errored_or_cut_stream_is_not_cached(gw, mock):
    req = body(unique("cut stream"), stream=True)
    mock.script(model=OA_MODEL, behaviour=reset_after(2), times=1)
    with requests.post(gw.url + "/v1/chat/completions", json=req, stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {ALICE}"}) as r:
        assert r.headers["x-keyrelay-cache"] == "MISS"
        text = r.text
    assert '"error"' in text  # the stream ended with an error event
    before = calls(mock)
    again = post(gw, req)
    assert again.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1
    assert "[DONE]" in again.text and '"error"' not in again.text
    assert post(gw, req).headers["x-keyrelay-cache"] == "HIT"  # the complete one was stored
    # an upstream error (non-stream) is not stored either
    plain = body(unique("upstream error"))
    mock.script(model=OA_MODEL, behaviour=error(400), times=1)
    assert post(gw, plain).status_code == 400
    before = calls(mock)
    ok = post(gw, plain)
    assert ok.status_code == 200 and ok.headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1


# ------------------------------------------------------------------------------------------- 5. usage


def usage_row(gw: Server, request_id: str) -> dict | None:
    conn = sqlite3.connect(gw.config["server"]["database"])
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM usage_records WHERE request_id = ?", (request_id,)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def wait_row(gw: Server, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = usage_row(gw, request_id)
        if row is not None:
            return row
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_hit_is_recorded_as_cached_and_free(gw, stream):
    req = body(unique("usage"), max_tokens=50, stream=stream)
    miss_id, hit_id = uuid.uuid4().hex, uuid.uuid4().hex
    assert post(gw, req, **{"X-Request-ID": miss_id}).headers["x-keyrelay-cache"] == "MISS"
    assert post(gw, req, **{"X-Request-ID": hit_id}).headers["x-keyrelay-cache"] == "HIT"
    miss, hit = wait_row(gw, miss_id), wait_row(gw, hit_id)
    assert miss["cached"] == 0 and miss["cost_usd"] > 0 and miss["key_id"] and miss["prompt_tokens"] > 0
    assert hit["cached"] == 1 and hit["cost_usd"] == 0 and hit["key_id"] is None and hit["provider"] is None
    assert (hit["prompt_tokens"], hit["completion_tokens"], hit["status"]) == (0, 0, 200)


# ------------------------------------------------------------------------------------------- admin, metrics


def test_admin_view_clear_and_metrics(gw):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    req = body(unique("admin"))
    post(gw, req)
    assert post(gw, req).headers["x-keyrelay-cache"] == "HIT"
    assert post(gw, req, **{"Cache-Control": "no-cache"}).headers["x-keyrelay-cache"] == "REFRESH"
    assert post(gw, req, **{"Cache-Control": "no-store"}).headers["x-keyrelay-cache"] == "BYPASS"
    time.sleep(FLUSHED)  # the other worker's counters too
    stats = requests.get(gw.url + "/admin/api/cache", headers=admin, timeout=10).json()
    assert stats["entries"] >= 1 and stats["bytes"] > 0 and stats["hits"] >= 1 and 0 < stats["hit_ratio"] < 1
    assert stats["max_entries"] == 10000
    assert requests.get(gw.url + "/admin/api/cache", timeout=10).status_code == 401
    cleared = requests.delete(gw.url + "/admin/api/cache", headers=admin, timeout=10).json()
    assert cleared["cleared"] == stats["entries"]
    assert post(gw, req).headers["x-keyrelay-cache"] == "MISS"
    audit = requests.get(gw.url + "/admin/api/audit", headers=admin, timeout=10).json()["audit"]
    assert any(a["action"] == "cache_clear" for a in audit)
    text = requests.get(gw.url + "/metrics", timeout=10).text
    results = [f'keyrelay_cache_requests_total{{result="{r}"}}' for r in ("hit", "miss", "bypass", "refresh")]
    for name in (*results, "keyrelay_cache_stores_total", "keyrelay_cache_entries", "keyrelay_cache_bytes"):
        assert name in text, name


# -------------------------------------------------------------------------------------- 3. TTL, LRU, workers


@pytest.fixture(scope="module")
def small(tmp_path_factory, mock):
    config = {
        "server": {"log_level": "info"},
        "providers": [{"name": "oa", "type": "openai", "base_url": mock.url + "/v1",
                       "keys": ["sk-cache-small"]}],
        "models": [{"name": "chat", "targets": [{"provider": "oa", "model": OA_MODEL}]}],
        "cache": {"enabled": True, "ttl_s": 600, "max_entries": 3},
    }
    server = Server(tmp_path_factory.mktemp("cache-small"), config)
    with server:
        yield server


FLUSHED = 2 * FLUSH_INTERVAL_S  # every worker has written the uses its hits batched


def worker_of(gw: Server, request_id: str) -> int:
    for line in gw.logs().splitlines():
        if request_id in line and line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") == request_id and entry.get("event") == "request":
                return int(entry["pid"])
    raise AssertionError(f"no log line for {request_id}")


def hits_on_both_workers(gw: Server, req: dict, **headers: str) -> set[int]:
    """Ask until both workers answered (fresh connections); every answer must be a HIT."""
    pids: set[int] = set()
    for _ in range(60):
        rid = uuid.uuid4().hex
        r = post(gw, req, key="", **{"X-Request-ID": rid, **headers})
        assert r.headers["x-keyrelay-cache"] == "HIT", r.headers
        time.sleep(0.02)
        pids.add(worker_of(gw, rid))
        if len(pids) == 2:
            return pids
    raise AssertionError("could not reach both workers")


def test_ttl_expiry_across_workers(small, mock):
    req = body(unique("ttl"))
    assert post(small, req, key="", **{"x-keyrelay-cache-ttl": "1"}).headers["x-keyrelay-cache"] == "MISS"
    stored = time.monotonic()
    hits_on_both_workers(small, req)
    assert time.monotonic() - stored < 1, "too slow to see the hits before the TTL"
    time.sleep(max(0.0, 1.05 - (time.monotonic() - stored)))
    before = calls(mock)
    assert post(small, req, key="").headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1


def test_lru_eviction_at_max_entries_across_workers_and_restart(small, mock):
    a, b, c, d = (body(unique(f"lru {n}")) for n in "abcd")
    for req in (a, b, c):
        assert post(small, req, key="").headers["x-keyrelay-cache"] == "MISS"
    hits_on_both_workers(small, a)  # a is now more recently used than b and c
    hits_on_both_workers(small, c)  # and c than b: b is the least recently used
    time.sleep(FLUSHED)
    assert post(small, d, key="").headers["x-keyrelay-cache"] == "MISS"  # the 4th entry evicts b
    for req in (a, c, d):
        assert post(small, req, key="").headers["x-keyrelay-cache"] == "HIT"
        time.sleep(0.01)
    time.sleep(FLUSHED)
    before = calls(mock)
    assert post(small, b, key="").headers["x-keyrelay-cache"] == "MISS" and calls(mock) == before + 1
    # b came back and evicted the least recently used of a, c, d: a (hit before c and d)
    small.stop()
    small.start()  # the entries live in the store: they survive a restart
    for req in (b, c, d):
        assert post(small, req, key="").headers["x-keyrelay-cache"] == "HIT"
    assert post(small, a, key="").headers["x-keyrelay-cache"] == "MISS"
