"""Issue 2: a real gunicorn + gevent keyrelay answering with the built-in mock, and clean errors over HTTP."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import openai
import pytest
import requests

from tests.harness import REPO, Gateway, mock_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foundation")
    with Gateway(tmp, mock_config(max_body_bytes=4096)) as gateway:
        yield gateway


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_via_openai_sdk(gw):
    resp = client(gw).chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "Mock answer from keyrelay to: Hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_via_openai_sdk(gw):
    stream = client(gw).chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock answer from keyrelay to: stream me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_stream_is_sse_with_done_and_no_buffering_header(gw):
    r = requests.post(gw.url + "/v1/chat/completions", json={
        "model": "mock-chat", "stream": True, "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["X-Accel-Buffering"] == "no"
    assert r.text.rstrip().endswith("data: [DONE]")


def post(gw, data, **kw):
    return requests.post(gw.url + "/v1/chat/completions", data=data,
                         headers={"Content-Type": "application/json"}, timeout=10, **kw)


def assert_openai_error(r, status, *words):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    for word in words:
        assert word in err["message"]
    assert "Traceback" not in r.text and "<html" not in r.text.lower()


def test_malformed_json_is_400(gw):
    assert_openai_error(post(gw, b'{"model": "mock-chat", "messages": ['), 400, "not valid JSON")


def test_missing_model_and_messages_are_400(gw):
    assert_openai_error(post(gw, json.dumps({"messages": [{"role": "user", "content": "x"}]})), 400, "model")
    assert_openai_error(post(gw, json.dumps({"model": "mock-chat"})), 400, "messages")
    assert_openai_error(post(gw, json.dumps({"model": "mock-chat", "messages": []})), 400, "messages")
    assert_openai_error(post(gw, json.dumps(["not", "an", "object"])), 400, "JSON object")


def test_unknown_model_is_404(gw):
    r = post(gw, json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
    assert_openai_error(r, 404, "no-such-model")
    with pytest.raises(openai.NotFoundError):
        client(gw).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_oversized_body_is_413(gw):
    big = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "x" * 10000}]})
    assert_openai_error(post(gw, big), 413, "limit")


def test_wrong_method_and_unknown_path(gw):
    r = requests.get(gw.url + "/v1/chat/completions", timeout=10)
    assert_openai_error(r, 405, "GET")
    assert "POST" in r.headers["Allow"]
    assert_openai_error(requests.get(gw.url + "/v1/nothing-here", timeout=10), 404, "/v1/nothing-here")


def test_health_ready_models_and_request_id(gw):
    assert requests.get(gw.url + "/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(gw.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = client(gw).models.list()
    assert "mock-chat" in [m.id for m in models.data]
    r = requests.get(gw.url + "/v1/models", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert r.headers["X-Request-ID"] == "abc-123"
    assert requests.get(gw.url + "/v1/models", timeout=5).headers["X-Request-ID"]


def test_runs_gevent_workers(gw):
    assert len(gw.worker_pids()) == 2
    events = [json.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    ready = [e for e in events if e.get("event") == "worker_ready"]
    assert [e["worker_class"] for e in ready] == ["DrainingGeventWorker"] * 2  # gunicorn's, subclassed


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30, env=env)


def test_check_config_example_ok_and_bad_value_names_path(tmp_path):
    ok = run_cli("check-config", str(REPO / "config" / "keyrelay.example.yaml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  - name: g\n    type: gemini\n    keys: [abc, {key: def, weight: -3}]\n")
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "providers[0].keys[1].weight" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_serve_refuses_bad_config_and_usage_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 99999}\nproviders: [{name: m, type: mock}]\n")
    r = run_cli("serve", "--config", str(bad))
    assert r.returncode == 2 and "server.port" in r.stderr
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("version").stdout.startswith("keyrelay ")


def test_migrate_refuses_a_newer_database(tmp_path):
    cfg = tmp_path / "c.yaml"
    db_path = tmp_path / "k.db"
    cfg.write_text(f"server: {{database: {db_path}}}\nproviders: [{{name: m, type: mock}}]\n")
    assert run_cli("migrate", "--config", str(cfg)).returncode == 0
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 0)")
    conn.commit()
    conn.close()
    r = run_cli("migrate", "--config", str(cfg))
    assert r.returncode == 1 and "newer than this keyrelay" in r.stderr
