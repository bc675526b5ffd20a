"""bench.load --unique: every request's body differs (a response cache's misses), same length."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.recording_upstream import RecordingUpstream

REPO = Path(__file__).resolve().parents[2]


def test_unique_marker_makes_every_body_different():
    body = json.dumps({"messages": [{"role": "user", "content": "hello UUUUUUUUUUUUUUUU"}]})
    with RecordingUpstream(200, {"ok": True}) as up:
        out = subprocess.run([sys.executable, "-m", "bench.load", "--url", up.url + "/x", "--body", body,
                              "-c", "3", "-n", "30", "-d", "10", "--unique", "U" * 16],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
        bodies = [b for _, _, b in up.requests]
    assert json.loads(out)["ok"] >= 10  # this HTTP/1.0 server closes connections: some sends fail
    assert len(bodies) >= 10 and len(set(bodies)) == len(bodies) and {len(b) for b in bodies} == {len(body)}
    assert all(b"UUUU" not in b for b in bodies)
