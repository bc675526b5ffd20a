"""Issue 2: a real gunicorn + gevent keyrelay answering with the built-in mock, and the CLI.

Routing, validation and error envelopes are tested in process: tests/inprocess/test_errors.py."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import openai
import pytest
import requests

from tests.harness import REPO, Server, mock_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foundation")
    with Server(tmp, mock_config()) as gateway:
        yield gateway


def client(gw: Server) -> openai.OpenAI:
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
