"""Issue 19, traces under gunicorn: with ``tracing: {enabled: true, exporter: console}`` a worker exports
the request's spans (batched, flushed at shutdown) in the client's trace; a bad tracing config is exit 2."""
from __future__ import annotations

import subprocess
import sys

import requests
import yaml

from tests.harness import REPO, Server, mock_config

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"


def test_console_exporter_under_gunicorn(tmp_path):
    config = {**mock_config(), "tracing": {"enabled": True, "exporter": "console"}}
    with Server(tmp_path, config, workers=1) as gw:
        r = requests.post(gw.url + "/v1/chat/completions", timeout=10,
                          headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
                          json={"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
    logs = gw.logs()  # stopped: the batch was exported at shutdown
    assert logs.count(f'"trace_id": "0x{TRACE}"') >= 3  # the request, its attempt, the upstream call
    assert '"name": "POST /v1/chat/completions"' in logs and '"name": "attempt 1"' in logs


def test_bad_tracing_config_is_exit_2(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump({**mock_config(), "tracing": {"enabled": True, "exporter": "zipkin"}}))
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "tracing.exporter" in out.stderr
