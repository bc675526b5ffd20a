"""A worker killed with SIGKILL right after recording transitions: none of them is lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from keys_support import SECRETS, SPECS, make_pool

from proxy.keys import key_id

REPO = Path(__file__).resolve().parents[2]
G = [key_id("gemini", s) for s in SECRETS]

CHILD = """
import sys, time
sys.path[:0] = [{repo!r}, {here!r}]
from keys_support import FAST, SECRETS, SPECS, make_pool
from proxy import errors
from proxy.keys import KeyAdmin, key_id
from dataclasses import replace
G = [key_id("gemini", s) for s in SECRETS]
p = make_pool({db!r}, settings=replace(FAST, flush_interval_s=3600.0))
KeyAdmin(p).disable(G[0], "killed-test", actor="child")
p.record(G[1], "m", errors.AUTH)
for _ in range(3):
    p.record(G[2], "m", errors.TRANSIENT)
p.record(G[2], "other", errors.QUOTA, retry_after=500)
for _ in range(50):
    p.record(key_id("ollama", None), "m", errors.OK)
print("recorded", flush=True)
time.sleep(60)
"""


def test_sigkill_loses_no_state_transition(any_database):
    db = str(any_database)
    code = CHILD.format(repo=str(REPO), here=str(Path(__file__).parent), db=db)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "recorded"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    with make_pool(db, start_flusher=False, specs=SPECS) as p:
        d = {x["id"]: x for x in p.describe()}
        assert (d[G[0]]["enabled"], d[G[0]]["disabled_reason"]) == (False, "killed-test")
        assert d[G[1]]["status"] == "invalid"
        assert d[G[2]]["circuit"] == "open"
        assert d[G[2]]["cooldowns"]["other"] > 400
        assert d[key_id("ollama", None)]["requests"] == 0  # only unflushed counters may be lost
