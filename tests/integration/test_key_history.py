"""Issue 19, must-show 2: the key history equals what the mock upstream counted over a scripted run
(a real 2-worker gunicorn, the mock Gemini over real sockets)."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from proxy.keys import key_id
from tests.harness import Server
from tests.mock_upstream import MockUpstream, error, invalid_key

KEYS = ["hist-key-alpha-0001", "hist-key-bravo-0002", "hist-key-charlie-03"]
IDS = [key_id("gemini", k) for k in KEYS]
TOKEN = "hist-admin-token-0123"
MODEL = "gemini-2.5-flash"
GENERATE = ("generateContent", "streamGenerateContent")


def admin(gw: Server, path: str, **params: str) -> requests.Response:
    return requests.get(gw.url + "/admin/api" + path, params=params, timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"})


def chat(gw: Server, session: requests.Session, stream: bool) -> int:
    """One request; the tokens the client was told (prompt + completion)."""
    body: dict = {"model": "flash", "messages": [{"role": "user", "content": "count the tokens please"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    r = session.post(gw.url + "/v1/chat/completions", json=body, timeout=20, stream=stream)
    assert r.status_code == 200, r.text
    if not stream:
        u = r.json()["usage"]
        return u["prompt_tokens"] + u["completion_tokens"]
    tokens = 0
    for line in r.iter_lines():
        if line.startswith(b"data: {"):
            u = json.loads(line[6:]).get("usage")
            if u:
                tokens = u["prompt_tokens"] + u["completion_tokens"]
    return tokens


@pytest.fixture
def mock():
    with MockUpstream(latency=0.03) as m:
        yield m


def test_history_equals_what_the_mock_upstream_counted(tmp_path, mock):
    config = {
        "server": {"admin_token": TOKEN},
        "key_manager": {"default_cooldown_s": 2, "breaker_failures": 50, "revalidate_interval_s": 3600},
        "retry": {"attempts": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "retry_after_cap_s": 0},
        "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": KEYS}],
        "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": MODEL}]}],
    }
    mock.script(key=KEYS[0], behaviour=error(429, retry_delay="1s"), times=3)
    mock.script(key=KEYS[1], behaviour=error(503), times=4)
    mock.script(key=KEYS[2], behaviour=invalid_key(), times=1)
    with Server(tmp_path, config) as gw:
        sessions = [requests.Session() for _ in range(6)]  # several connections: both workers serve
        with ThreadPoolExecutor(6) as pool:
            told = list(pool.map(lambda i: chat(gw, sessions[i % 6], stream=i % 4 == 0), range(60)))
        time.sleep(0.8)  # every worker's batch flushed (0.25 s)
        calls = [c for c in mock.calls if c["op"] in GENERATE]
        pids = set()
        for kid, secret in zip(IDS, KEYS, strict=True):
            mine = [c for c in calls if c["key"] == secret]
            r = admin(gw, f"/keys/{kid}/history", window="1h", step="1m")
            assert r.status_code == 200, r.text
            pids.add(r.headers["X-Keyrelay-Worker"])
            t = r.json()["totals"]
            assert t["requests"] == len(mine)
            assert t["ok"] == sum(1 for c in mine if c["status"] == 200)
            assert t["http_429"] == sum(1 for c in mine if c["status"] == 429)
            assert t["errors"]["quota"] == sum(1 for c in mine if c["status"] == 429)
            assert t["errors"]["transient"] == sum(1 for c in mine if c["status"] == 503)
            assert t["errors"]["auth"] == sum(1 for c in mine if c["status"] == 400)
            points = r.json()["points"]
            assert len(points) == 60 and sum(p["requests"] for p in points) == len(mine)
        # the script happened (key A cools down after its first 429s: it may meet fewer than 3)
        assert 1 <= admin(gw, f"/keys/{IDS[0]}/history").json()["totals"]["http_429"] <= 3
        assert admin(gw, f"/keys/{IDS[1]}/history").json()["totals"]["errors"]["transient"] == 4
        assert admin(gw, f"/keys/{IDS[2]}/history").json()["totals"]["errors"]["auth"] == 1

        whole = admin(gw, "/history", window="24h", step="5m", provider="gemini", model=MODEL).json()
        t = whole["totals"]
        assert t["requests"] == len(calls)
        assert t["ok"] == 60 == sum(1 for c in calls if c["status"] == 200)
        assert t["tokens"] == sum(told) > 0
        assert 30 <= t["latency_ms"]["p50"] <= t["latency_ms"]["p95"] < 1000  # the mock waits 30 ms
        cooled = [p for p in whole["periods"] if p["kind"] == "cooldown"]
        assert cooled and {p["key_id"] for p in cooled} == {IDS[0]} and cooled[0]["model"] == MODEL
        assert admin(gw, "/history", provider="other").json()["totals"]["requests"] == 0

        bad = admin(gw, "/history", window="forever")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"
        bad = admin(gw, f"/keys/{IDS[0]}/history", window="3d", step="5m")
        assert bad.status_code == 400 and "whole hours" in bad.json()["error"]["message"]
        assert admin(gw, "/keys/k_0000000000/history").status_code == 404
