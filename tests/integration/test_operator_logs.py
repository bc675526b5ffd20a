"""Issue 19, logs an operator can act on: key state changes at WARNING with id, label, provider, model and
reason; each attempt of a failed-over request; levels by status with the error code; 404s rate-limited;
a stream's time to first byte and duration under their own names. One gevent worker, real sockets."""
from __future__ import annotations

import json
import time

import pytest
import requests

from proxy.keys.ids import key_id
from tests.harness import Server
from tests.mock_upstream import MockUpstream, error, invalid_key

KEYS = ["oplog-key-alpha-0001", "oplog-key-bravo-0002"]
IDS = [key_id("gemini", k) for k in KEYS]
TOKEN = "oplog-admin-token-0123"


@pytest.fixture
def mock():
    with MockUpstream() as m:
        yield m


def config(mock: MockUpstream) -> dict:
    return {
        "server": {"admin_token": TOKEN},
        "retry": {"attempts": 3, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "retry_after_cap_s": 0},
        "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta",
                       "keys": [{"key": KEYS[0], "label": "primary"}, {"key": KEYS[1], "label": "spare"}]}],
        "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]}],
    }


def lines(gw: Server) -> list[dict]:
    return [json.loads(ln) for ln in gw.logs().splitlines() if ln.startswith("{")]


def chat(gw: Server, **body) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", timeout=20,
                         json={"model": "flash", "messages": [{"role": "user", "content": "hi"}], **body})


def test_failed_over_request_and_key_going_invalid(tmp_path, mock):
    mock.script(key=KEYS[0], behaviour=invalid_key())
    with Server(tmp_path, config(mock), workers=1) as gw:
        r = requests.post(gw.url + "/v1/chat/completions", timeout=20, headers={"X-Request-ID": "failover-1"},
                          json={"model": "flash", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        if mock.count(key=KEYS[0]) == 0:  # round robin started with the good key: ask again
            r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                              headers={"X-Request-ID": "failover-1"},
                              json={"model": "flash", "messages": [{"role": "user", "content": "hi"}]})
        logs = lines(gw)
    state = [ln for ln in logs if ln.get("event") == "key_state"]
    assert len(state) == 1, state
    assert state[0]["level"] == "warning"
    assert {k: state[0][k] for k in ("key_id", "label", "provider", "model", "state")} == {
        "key_id": IDS[0], "label": "primary", "provider": "gemini", "model": "gemini-2.5-flash",
        "state": "invalid"}
    assert state[0]["reason"] and KEYS[0] not in json.dumps(logs)
    attempts = [ln for ln in logs
                if ln.get("event") == "upstream_attempt" and ln["request_id"] == "failover-1"]
    assert [(a["attempt"], a["key_id"], a["outcome"], a["level"]) for a in attempts] == [
        (1, IDS[0], "auth", "warning"), (2, IDS[1], "ok", "info")]
    assert attempts[0]["status"] in (400, 401, 403) and attempts[1]["status"] == 200
    assert all(a["latency_ms"] >= 0 for a in attempts)
    request = [ln for ln in logs if ln.get("event") == "request" and ln["request_id"] == "failover-1"][-1]
    assert request["level"] == "info" and request["attempts"] == 2
    print("\n".join(json.dumps(ln) for ln in [*state, *attempts, request]))  # quoted in the issue note


def test_levels_error_codes_streams_and_rate_limited_404s(tmp_path, mock):
    mock.script(key=KEYS[0], behaviour=error(429))
    mock.script(key=KEYS[1], behaviour=error(429))
    with Server(tmp_path, config(mock), workers=1) as gw:
        assert chat(gw, model="no such/../model").status_code == 400
        assert chat(gw).status_code in (429, 503)  # every key rate-limited
        mock.clear()
        for _ in range(15):
            assert requests.get(gw.url + "/nope", timeout=5).status_code == 404
        logs = lines(gw)
    requests_ = [ln for ln in logs if ln.get("event") == "request"]
    bad = next(ln for ln in requests_ if ln["status"] == 400)
    assert bad["level"] == "warning" and bad["error_code"] == "invalid_model"
    limited = next(ln for ln in requests_ if ln["status"] in (429, 503))
    assert limited["level"] == ("warning" if limited["status"] == 429 else "error")
    assert limited["error_code"] in ("all_keys_cooling", "no_usable_key")
    cooling = [ln for ln in logs if ln.get("event") == "key_state" and ln["state"] == "cooldown"]
    assert {ln["key_id"] for ln in cooling} == set(IDS) and all("cooling" in ln["reason"] for ln in cooling)
    assert len([ln for ln in requests_ if ln["status"] == 404]) == 10  # then held back


def test_stream_logs_time_to_first_byte_and_duration(tmp_path, mock):
    with Server(tmp_path, config(mock), workers=1) as gw:
        r = requests.post(gw.url + "/v1/chat/completions", timeout=20, stream=True,
                          json={"model": "flash", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and b"[DONE]" in r.content
        deadline = time.monotonic() + 5  # a stream's line is written after its last byte went out
        while True:
            found = [ln for ln in lines(gw) if ln.get("event") == "request"
                     and ln["path"] == "/v1/chat/completions"]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    line = found[0]
    assert 0 < line["ttfb_ms"] <= line["duration_ms"]


def test_access_log_never_shows_a_query_string_key(tmp_path, mock):
    client_key = "kr-" + "Q" * 43
    cfg = config(mock)
    cfg["server"]["access_log"] = True
    cfg["clients"] = [{"name": "g", "key": client_key}]
    with Server(tmp_path, cfg, workers=1) as gw:
        r = requests.post(f"{gw.url}/v1beta/models/flash:generateContent?key={client_key}&alt=json",
                          timeout=20, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while "generateContent?" not in gw.logs() and time.monotonic() < deadline:  # the access line
            time.sleep(0.05)
        logs = gw.logs()
    assert "generateContent?key=[REDACTED]&alt=json" in logs  # the access line, scrubbed
    assert client_key not in logs
