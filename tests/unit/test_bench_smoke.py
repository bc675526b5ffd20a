"""bench/ smoke check: the bench mock answers the load driver in both dialects, streams included."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mock_url():
    proc = subprocess.Popen([sys.executable, "-m", "bench.mock", "--port", "0", "--chunks", "3",
                             "--chunk-gap-ms", "20"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on " in line
        yield line.rsplit("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


def drive(url: str, body: dict, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.load", "--url", url, "--body", json.dumps(body),
                          "-c", "4", "-n", "50", "-d", "10", *extra],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


def test_load_driver_against_bench_mock(mock_url):
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    r = drive(mock_url + "/v1beta/models/m:generateContent", gemini)
    assert (r["ok"], r["errors"]) == (50, 0) and r["latency_ms"]["p99"] > 0
    s = drive(mock_url + "/v1beta/models/m:streamGenerateContent?alt=sse", gemini, "--stream",
              "--expect-chunks", "3")
    assert (s["ok"], s["errors"]) == (50, 0)
    assert s["stream"]["chunks_min"] == 3 and s["stream"]["gap_ms"]["p1"] >= 15  # chunks timed apart
    o = drive(mock_url + "/v1/chat/completions", {"model": "x", "messages": [], "stream": True},
              "--stream", "--expect-chunks", "3")
    assert (o["ok"], o["errors"]) == (50, 0)


def test_the_floor_relays_answers_and_streams(mock_url):
    """bench/floor.py under gunicorn + gevent, as bench/run serves it, driven by the load driver."""
    sys.path.insert(0, str(REPO))
    from bench import runner, yardstick

    tmp = Path(__import__("tempfile").mkdtemp(prefix="floor-smoke-"))
    floor = yardstick.Floor(tmp, mock_url, 1, "floor")
    try:
        body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        r = drive(floor.url + "/v1/chat/completions", body)
        assert (r["ok"], r["errors"]) == (50, 0)
        s = drive(floor.url + "/v1/chat/completions", {**body, "stream": True}, "--stream",
                  "--expect-chunks", "3")
        assert (s["ok"], s["errors"]) == (50, 0) and s["stream"]["gap_ms"]["p1"] >= 15
        assert runner.cpu_seconds(floor.worker_pids()) > 0
    finally:
        floor.close()
