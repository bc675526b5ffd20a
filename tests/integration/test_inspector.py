"""Issue 16 against a real gunicorn + gevent keyrelay (2 workers) and mock upstreams over real sockets: the
HAR export of a failed-over request and a stream, the shared ring, sampling, header modes, transforms."""
from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
import requests

from proxy.inspect.ring import sampled
from tests.harness import Server
from tests.mock_upstream import error
from tests.recording_upstream import RecordingUpstream

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "har-1.2.schema.json").read_text())
ADMIN = "inspector-admin-token-0123456789"
GEM_KEYS = ["gem-inspect-key-AAAA1111", "gem-inspect-key-BBBB2222"]
OAI_KEY = "sk-inspect-openai-CCCC3333"
CLIENT_KEY = "kr-" + "inspectorClientKey0123456789abcdefghijklmno"[:43]
SECRETS = [*GEM_KEYS, OAI_KEY, CLIENT_KEY, ADMIN]
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
CLIENT_H = {"Authorization": f"Bearer {CLIENT_KEY}"}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def wait_entries(gw: Server, n: int, timeout: float = 10.0, **params: str) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = requests.get(gw.url + "/admin/api/inspect", headers=ADMIN_H,
                            params={"limit": "1000", **params}, timeout=10).json()["data"]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def base_config(mock_url: str, **inspector: object) -> dict:
    return {
        "server": {"admin_token": ADMIN},
        "auth": {"mode": "keys"},
        "clients": [{"name": "tester", "key": CLIENT_KEY}],
        "retry": {"attempts": 3, "backoff_base_s": 0.01, "backoff_cap_s": 0.02},
        "inspector": {"enabled": True, **inspector},
        "providers": [
            {"name": "gem", "type": "gemini", "base_url": mock_url + "/v1beta", "keys": GEM_KEYS},
            {"name": "compat", "type": "openai", "base_url": mock_url + "/v1", "keys": [OAI_KEY]},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            {"name": "gpt", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}]},
        ],
    }


# ---------------------------------------------------------------------------------------------- HAR


@pytest.fixture(scope="module")
def har_gw(tmp_path_factory, mock):
    config = base_config(mock.url, redact=["$.messages[*].content"], max_body_bytes=4096)
    config["logging"] = {"bodies": True}
    with Server(tmp_path_factory.mktemp("inspect-har"), config) as gw:
        yield gw


def test_har_of_a_failover_and_a_stream(har_gw, mock):
    gw = har_gw
    requests.delete(gw.url + "/admin/api/inspect", headers=ADMIN_H, timeout=10).raise_for_status()
    mock.clear()
    mock.script(model="gemini-2.5-flash", behaviour=error(503), times=1)  # the first key fails: failover
    r = requests.post(gw.url + "/v1/chat/completions", headers={**CLIENT_H, "X-Request-ID": "har-failover"},
                      json={"model": "flash", "messages": user("private words")}, timeout=30)
    assert r.status_code == 200, r.text
    with requests.post(gw.url + "/v1/chat/completions", headers={**CLIENT_H, "X-Request-ID": "har-stream"},
                       json={"model": "gpt", "stream": True, "messages": user("stream me please")},
                       stream=True, timeout=30) as s:
        assert s.status_code == 200
        body = b"".join(s.iter_content(None))
    assert b"[DONE]" in body
    assert len(wait_entries(gw, 2)) == 2

    resp = requests.get(gw.url + "/admin/api/inspect.har", headers=ADMIN_H, timeout=10)
    assert resp.status_code == 200
    text = resp.text
    for secret in SECRETS:
        assert secret not in text, "a secret in the HAR"
    har = resp.json()
    jsonschema.validate(har, SCHEMA, format_checker=jsonschema.FormatChecker())
    entries = har["log"]["entries"]
    assert len(entries) == 5  # failover: client + 2 attempts; stream: client + 1 attempt
    by_req: dict[str, list[dict]] = {}
    for e in entries:
        by_req.setdefault(e["_keyrelay"]["request_id"], []).append(e)
    failover, stream = by_req["har-failover"], by_req["har-stream"]
    steps = [(e["_keyrelay"]["kind"], e["_keyrelay"]["attempt"], e["response"]["status"]) for e in failover]
    assert steps == [("client", 0, 200), ("upstream", 1, 503), ("upstream", 2, 200)]
    assert [e["_keyrelay"]["outcome"] for e in failover] == ["ok", "transient", "ok"]
    assert failover[1]["_keyrelay"]["key_id"] != failover[2]["_keyrelay"]["key_id"]
    for e in entries:
        applicable = [v for v in e["timings"].values() if v >= 0]
        assert e["time"] == pytest.approx(sum(applicable), abs=0.01)
    assert failover[0]["time"] >= failover[1]["time"] + failover[2]["time"] - 0.01  # the attempts fit inside
    assert all(e["serverIPAddress"] == "127.0.0.1" for e in entries if e["_keyrelay"]["kind"] == "upstream")
    upstream_req = failover[2]["request"]
    assert "/v1beta/models/gemini-2.5-flash:generateContent" in upstream_req["url"]
    assert {"name": "x-goog-api-key", "value": "[REDACTED]"} in upstream_req["headers"]
    assert "private words" in upstream_req["postData"]["text"]  # the Gemini body: redact names OpenAI paths
    client_req = failover[0]["request"]
    assert json.loads(client_req["postData"]["text"])["messages"][0]["content"] == "[REDACTED]"
    assert {"name": "Authorization", "value": "[REDACTED]"} in client_req["headers"]
    for e in stream:  # upstream and client side: every event with its arrival time
        chunks = e["response"]["content"]["_chunks"]
        assert len(chunks) >= 3
        times = [c["time_ms"] for c in chunks]
        assert times == sorted(times) and times[-1] <= e["time"] + 0.01
        assert any('"content":"ech"' in c["text"] or "echo" in c["text"] for c in chunks)
    assert stream[1]["request"]["postData"]["text"].count("[REDACTED]") == 1

    one = requests.get(gw.url + "/admin/api/inspect", headers=ADMIN_H, timeout=10).json()["data"][0]
    detail = requests.get(gw.url + f"/admin/api/inspect/{one['id']}", headers=ADMIN_H, timeout=10).json()
    assert detail["request_id"] == "har-stream" and detail["transaction"]["attempts"][0]["outcome"] == "ok"

    db = b"".join(p.read_bytes() for p in gw.dir.glob("keyrelay.db*"))
    for secret in SECRETS:
        assert secret.encode() not in db, "a secret in the database"
    line = next(json.loads(x) for x in gw.logs().splitlines() if '"har-failover"' in x and '"request"' in x)
    assert json.loads(line["request_body"])["messages"][0]["content"] == "[REDACTED]"
    assert "echo: private words" in line["response_body"]


def test_v1_inspect_is_the_har_for_the_admin_only(har_gw):
    gw = har_gw
    assert requests.get(gw.url + "/v1/inspect", timeout=10).status_code == 401
    assert requests.get(gw.url + "/v1/inspect", headers=CLIENT_H, timeout=10).status_code == 401
    assert requests.get(gw.url + "/admin/api/inspect.har", headers=CLIENT_H, timeout=10).status_code == 401
    r = requests.get(gw.url + "/v1/inspect", headers=ADMIN_H, timeout=10)
    assert r.status_code == 200 and r.json()["log"]["version"] == "1.2"
    bad = requests.get(gw.url + "/admin/api/inspect", headers=ADMIN_H, params={"status": "abc"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"
    assert requests.get(gw.url + "/admin/api/inspect/999999", headers=ADMIN_H, timeout=10).status_code == 404
    assert requests.delete(gw.url + "/v1/inspect", headers=ADMIN_H, timeout=10).status_code == 200
    assert requests.get(gw.url + "/admin/api/inspect", headers=ADMIN_H, timeout=10).json()["entries"] == 0


def test_refused_requests_are_captured_too_without_the_key_they_presented(har_gw):
    gw = har_gw
    wrong = "kr-" + "W" * 43
    r = requests.post(gw.url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {wrong}", "X-Request-ID": "refused-401"},
                      json={"model": "flash", "messages": user("x")}, timeout=10)
    assert r.status_code == 401
    r = requests.post(gw.url + "/v1/chat/completions", headers={**CLIENT_H, "X-Request-ID": "refused-400"},
                      json={"model": "flash", "messages": "not a list"}, timeout=10)
    assert r.status_code == 400
    deadline = time.monotonic() + 10
    while True:
        rows = {row["request_id"]: row for row in wait_entries(gw, 1)}
        if {"refused-401", "refused-400"} <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows["refused-401"]["status"] == 401 and rows["refused-400"]["status"] == 400
    detail = requests.get(gw.url + f"/admin/api/inspect/{rows['refused-401']['id']}", headers=ADMIN_H,
                          timeout=10).json()["transaction"]
    assert detail["attempts"] == [] and detail["client"]["response"]["status"] == 401
    assert wrong not in json.dumps(detail)
    db = b"".join(p.read_bytes() for p in gw.dir.glob("keyrelay.db*"))
    assert wrong.encode() not in db


def test_anthropic_messages_are_captured_with_their_translated_attempts(har_gw, mock):
    gw = har_gw
    body = {"model": "flash", "max_tokens": 50, "messages": [{"role": "user", "content": "from claude sdk"}]}
    r = requests.post(gw.url + "/v1/messages", headers={**CLIENT_H, "X-Request-ID": "msg-plain"}, json=body,
                      timeout=30)
    assert r.status_code == 200, r.text
    with requests.post(gw.url + "/v1/messages", headers={**CLIENT_H, "X-Request-ID": "msg-stream"},
                       json={**body, "stream": True}, stream=True, timeout=30) as s:
        assert b"message_stop" in b"".join(s.iter_content(None))
    deadline = time.monotonic() + 10
    while True:
        rows = {row["request_id"]: row for row in wait_entries(gw, 1)}
        if {"msg-plain", "msg-stream"} <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for rid, stream in (("msg-plain", False), ("msg-stream", True)):
        tx = requests.get(gw.url + f"/admin/api/inspect/{rows[rid]['id']}", headers=ADMIN_H,
                          timeout=10).json()["transaction"]
        assert tx["client"]["request"]["path"] == "/v1/messages" and tx["status"] == 200
        (attempt,) = tx["attempts"]
        assert ":streamGenerateContent" in attempt["request"]["url"] if stream else \
            ":generateContent" in attempt["request"]["url"]
        assert "from claude sdk" in attempt["request"]["body"]["text"]  # the Gemini body as sent
        assert ("chunks" in tx["client"]["response"]) is stream
        if stream:
            assert len(attempt["response"]["chunks"]) >= 1 and len(tx["client"]["response"]["chunks"]) >= 2


# ---------------------------------------------------------------------------------------------- ring, sample


def pinned_sessions(gw: Server) -> list[requests.Session]:
    """One keep-alive session per worker (gunicorn keeps a connection on the worker that accepted it)."""
    out: dict[str, requests.Session] = {}
    for _ in range(60):
        session = requests.Session()
        pid = session.get(gw.url + "/admin/api/inspect?limit=1", headers=ADMIN_H,
                          timeout=10).headers["X-Keyrelay-Worker"]
        if pid in out:
            session.close()
        else:
            out[pid] = session
        if len(out) == 2:
            return list(out.values())
    pytest.fail("could not reach both workers")


def test_the_ring_holds_max_entries_across_two_workers(tmp_path, mock):
    with Server(tmp_path, base_config(mock.url, max_entries=5)) as gw:
        sessions = pinned_sessions(gw)
        for i in range(14):  # alternately through each worker: both capture, both trim the one ring
            r = sessions[i % 2].post(gw.url + "/v1/chat/completions",
                                     headers={**CLIENT_H, "X-Request-ID": f"ring-{i:02d}"},
                                     json={"model": "gpt", "messages": user(f"n{i}")}, timeout=30)
            assert r.status_code == 200
        time.sleep(0.8)  # every worker's flush interval (0.25 s) has passed
        rows = wait_entries(gw, 5)
        assert [r["request_id"] for r in rows] == [f"ring-{i:02d}" for i in range(13, 8, -1)]
        listing = requests.get(gw.url + "/admin/api/inspect", headers=ADMIN_H, timeout=10).json()
        assert listing["entries"] == 5
        served = {json.loads(line)["pid"] for line in gw.logs().splitlines()
                  if '"ring-' in line and '"event":"request"' in line}
        assert len(served) == 2, "both workers served (and captured) requests"


def test_sample_half_captures_the_requests_whose_id_hashes_below_it(tmp_path, mock):
    with Server(tmp_path, base_config(mock.url, sample=0.5)) as gw:
        ids = [f"sample-{i}" for i in range(40)]
        for rid in ids:
            r = requests.post(gw.url + "/v1/chat/completions", headers={**CLIENT_H, "X-Request-ID": rid},
                              json={"model": "gpt", "messages": user("x")}, timeout=30)
            assert r.status_code == 200
        expected = {rid for rid in ids if sampled(rid, 0.5)}
        assert 12 <= len(expected) <= 28  # about half
        time.sleep(0.8)
        rows = wait_entries(gw, len(expected))
        assert {r["request_id"] for r in rows} == expected


# ---------------------------------------------------------------------------------------------- header modes

ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
MODES = {
    "none": None,
    "passthrough": {"mode": "passthrough"},
    "whitelist": {"mode": "whitelist", "allow": ["x-trace-id", "Cookie"]},
    "blacklist": {"mode": "blacklist", "deny": ["x-internal", "accept"]},
    "shaped": {"mode": "whitelist", "allow": ["x-trace-id", "user-agent"],
               "force": {"x-team": "core", "x-trace-id": "forced"},
               "add": {"x-source": "keyrelay", "x-team": "ignored"}, "drop": ["user-agent"]},
}
CLIENT_SENDS = {"X-Trace-Id": "trace-1", "X-Internal": "secret-ish", "User-Agent": "client-sdk/9",
                "Cookie": "session=abc", "X-Goog-Api-Key": "client-goog-secret", "Accept": "application/json"}
BASE = {"host", "content-type", "content-length", "accept-encoding", "authorization"}
EXPECTED = {
    "none": {**dict.fromkeys(BASE), "user-agent": "keyrelay/"},
    "passthrough": {**dict.fromkeys(BASE), "x-trace-id": "trace-1", "x-internal": "secret-ish",
                    "user-agent": "client-sdk/9", "accept": "application/json", "x-request-id": "hdr"},
    "whitelist": {**dict.fromkeys(BASE), "x-trace-id": "trace-1", "user-agent": "keyrelay/"},
    "blacklist": {**dict.fromkeys(BASE), "x-trace-id": "trace-1", "user-agent": "client-sdk/9",
                  "x-request-id": "hdr"},
    "shaped": {**dict.fromkeys(BASE), "x-trace-id": "forced", "x-team": "core", "x-source": "keyrelay"},
}


def test_header_modes_send_exactly_the_expected_headers(tmp_path):
    with RecordingUpstream(200, ANSWER) as up:
        providers, models = [], []
        for mode, headers in MODES.items():
            p: dict = {"name": f"up-{mode}", "type": "openai", "base_url": up.url + "/v1", "keys": [OAI_KEY]}
            if headers is not None:
                p["transforms"] = {"headers": headers}
            providers.append(p)
            models.append({"name": f"m-{mode}", "targets": [{"provider": p["name"], "model": "gpt-4o-mini"}]})
        config = {"server": {"admin_token": ADMIN}, "auth": {"mode": "keys"},
                  "clients": [{"name": "tester", "key": CLIENT_KEY}], "providers": providers,
                  "models": models}
        with Server(tmp_path, config) as gw:
            for mode in MODES:
                n = len(up.headers)
                r = requests.post(gw.url + "/v1/chat/completions",
                                  headers={**CLIENT_H, **CLIENT_SENDS, "X-Request-ID": "hdr"},
                                  json={"model": f"m-{mode}", "messages": user("hi")}, timeout=30)
                assert r.status_code == 200, (mode, r.text)
                got = up.headers[n]
                assert set(got) == set(EXPECTED[mode]), mode
                for name, value in EXPECTED[mode].items():
                    if value is not None:
                        assert got[name].startswith(value), (mode, name)
                assert got["authorization"] == f"Bearer {OAI_KEY}", mode  # the upstream key, not the client's
                assert "cookie" not in got and "x-goog-api-key" not in got and "x-api-key" not in got
                assert CLIENT_KEY not in json.dumps(got)


# ---------------------------------------------------------------------------------------------- transforms

SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
REQUEST_GEMINI = [
    {"set": "$.generationConfig.maxOutputTokens", "value": 1024},
    {"add": "$.safetySettings", "value": SAFETY},
    {"drop": "$.generationConfig.temperature"},
    {"regex": "(?i)secret-\\w+", "replace": "[removed]", "path": "$.contents[*].parts[*].text"},
]
REQUEST_OPENAI = [
    {"set": "$.max_tokens", "value": 64},
    {"add": "$.user", "value": "keyrelay"},
    {"drop": "$.logprobs"},
    {"regex": "(?i)secret-\\w+", "replace": "[removed]", "path": "$.messages[*].content"},
]
VOWELS = [{"regex": "[aeiou]", "replace": "*", "path": "$.choices[*].message.content"},
          {"regex": "[aeiou]", "replace": "*", "path": "$.choices[*].delta.content"}]
SHAPED = [{"set": "$.system_fingerprint", "value": "fp_keyrelay"}, {"add": "$.service_tier", "value": "kr"},
          {"add": "$.object", "value": "never-replaces"}, {"drop": "$.choices[*].logprobs"}, *VOWELS]


@pytest.fixture(scope="module")
def tf_gw(tmp_path_factory, mock):
    config = {
        "server": {"admin_token": ADMIN}, "auth": {"mode": "keys"},
        "clients": [{"name": "tester", "key": CLIENT_KEY}],
        "providers": [
            {"name": "gem", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": GEM_KEYS[:1],
             "transforms": {"request": REQUEST_GEMINI}},
            {"name": "compat", "type": "openai", "base_url": mock.url + "/v1", "keys": [OAI_KEY],
             "transforms": {"request": REQUEST_OPENAI, "response": VOWELS}},
        ],
        "models": [
            {"name": "flash", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            {"name": "flash-shout", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}],
             "transforms": {"response": VOWELS}},
            {"name": "gpt", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}]},
            {"name": "gpt-plain", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}],
             "transforms": {"response": []}},  # the model's (empty) list wins over the provider's
            {"name": "flash-shaped", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}],
             "transforms": {"response": SHAPED}},
            {"name": "gpt-shaped", "targets": [{"provider": "compat", "model": "gpt-4o-mini"}],
             "transforms": {"response": SHAPED}},
        ],
    }
    with Server(tmp_path_factory.mktemp("inspect-tf"), config) as gw:
        yield gw


def chat(gw: Server, body: dict) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", headers=CLIENT_H, json=body, timeout=30)


def stream_text(gw: Server, body: dict) -> str:
    with requests.post(gw.url + "/v1/chat/completions", headers=CLIENT_H, json={**body, "stream": True},
                       stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        raw = b"".join(r.iter_content(None)).decode()
    text = ""
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices") or []:
                text += c.get("delta", {}).get("content") or ""
    return text


def test_request_transforms_on_a_gemini_body(tf_gw, mock):
    mock.clear()
    r = chat(tf_gw, {"model": "flash", "temperature": 0.3, "max_tokens": 5000,
                     "messages": user("my Secret-abc123 stays home")})
    assert r.status_code == 200, r.text
    sent = mock.find(dialect="gemini")[-1]["body"]
    assert sent["generationConfig"]["maxOutputTokens"] == 1024
    assert "temperature" not in sent["generationConfig"]
    assert sent["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    assert sent["contents"][-1]["parts"][0]["text"] == "my [removed] stays home"
    assert r.json()["choices"][0]["message"]["content"] == "echo: my [removed] stays home"  # at the client


def test_request_transforms_on_an_openai_body(tf_gw, mock):
    mock.clear()
    r = chat(tf_gw, {"model": "gpt-plain", "max_tokens": 5000, "logprobs": False,
                     "messages": user("a secret-XYZ here")})
    assert r.status_code == 200, r.text
    sent = mock.find(dialect="openai")[-1]["body"]
    assert sent["max_tokens"] == 64 and sent["user"] == "keyrelay" and "logprobs" not in sent
    assert sent["messages"][-1]["content"] == "a [removed] here"
    assert r.json()["choices"][0]["message"]["content"] == "echo: a [removed] here"


@pytest.mark.parametrize("model, dialect", [("flash-shout", "gemini"), ("gpt", "openai")])
def test_response_transforms_on_an_answer_and_on_a_stream(tf_gw, mock, model, dialect):
    mock.clear()
    r = chat(tf_gw, {"model": model, "messages": user("hello there")})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "*ch*: h*ll* th*r*"
    assert stream_text(tf_gw, {"model": model, "messages": user("hello there")}) == "*ch*: h*ll* th*r*"
    assert len(mock.find(dialect=dialect)) == 2  # the mock answered plainly, the client got it transformed
    plain = "flash" if dialect == "gemini" else "gpt-plain"
    assert stream_text(tf_gw, {"model": plain, "messages": user("hello there")}) == "echo: hello there"


def stream_chunks(gw: Server, body: dict) -> list[dict]:
    with requests.post(gw.url + "/v1/chat/completions", headers=CLIENT_H, json={**body, "stream": True},
                       stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        raw = b"".join(r.iter_content(None)).decode()
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("model, dialect", [("flash-shaped", "gemini"), ("gpt-shaped", "openai")])
def test_each_response_rule_on_an_answer_and_on_each_stream_chunk(tf_gw, mock, model, dialect):
    mock.clear()
    answer = chat(tf_gw, {"model": model, "messages": user("hello there")}).json()
    assert answer["system_fingerprint"] == "fp_keyrelay" and answer["service_tier"] == "kr"
    assert answer["object"] == "chat.completion"  # add: only where absent
    assert "logprobs" not in answer["choices"][0]
    assert answer["choices"][0]["message"]["content"] == "*ch*: h*ll* th*r*"
    chunks = stream_chunks(tf_gw, {"model": model, "messages": user("hello there")})
    assert len(chunks) >= 3
    for c in chunks:
        assert c["system_fingerprint"] == "fp_keyrelay" and c["service_tier"] == "kr"
        assert c["object"] == "chat.completion.chunk"
        assert all("logprobs" not in choice for choice in c["choices"])
    text = "".join((choice["delta"].get("content") or "") for c in chunks for choice in c["choices"])
    assert text == "*ch*: h*ll* th*r*"
    assert [c["status"] for c in mock.find(dialect=dialect)] == [200, 200]  # the upstream answered plainly
