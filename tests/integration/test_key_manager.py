"""Issue 4: the key manager through a real 2-worker gunicorn against a scriptable mock Gemini."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from proxy.keys import key_id
from tests.harness import REPO, Server
from tests.mock_upstream import MockUpstream, error, invalid_key

KEYS = ["km-key-alpha-0001", "km-key-bravo-0002", "km-key-charlie-03"]
IDS = [key_id("gemini", k) for k in KEYS]
TOKEN = "km-admin-token-0123"


def config(mock: MockUpstream, **extra) -> dict:
    cfg = {
        "server": {"admin_token": TOKEN},
        "key_manager": {"default_cooldown_s": 30, "breaker_failures": 3, "breaker_open_s": 60},
        "retry": {"attempts": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "retry_after_cap_s": 0},
        "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": KEYS}],
        "models": [
            {"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            {"name": "pro", "targets": [{"provider": "gemini", "model": "gemini-2.5-pro"}]},
        ],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def mock():
    with MockUpstream() as m:
        yield m


def chat(gw: Server, model: str = "flash", session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(
        gw.url + "/v1/chat/completions",
        timeout=20,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def many(gw: Server, n: int, model: str = "flash", threads: int = 8) -> list[requests.Response]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: chat(gw, model), range(n)))


def admin(gw: Server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(
        method, gw.url + "/admin/api" + path, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}, **kw
    )


def keys_by_id(gw: Server) -> dict[str, dict]:
    return {k["id"]: k for k in admin(gw, "GET", "/keys").json()["keys"]}


def test_quota_on_one_key_is_invisible_and_per_model(tmp_path, mock):
    mock.script(key=KEYS[0], model="gemini-2.5-flash", behaviour=error(429, retry_delay="6.5s"))
    with Server(tmp_path, config(mock)) as gw:
        replies = many(gw, 60)
        assert [r.status_code for r in replies] == [200] * 60
        # requests already in flight when the first 429 came back may hit it too (8 at once here)
        limited = mock.count(key=KEYS[0], model="gemini-2.5-flash")
        assert 1 <= limited <= 8
        assert mock.count(key=KEYS[1]) + mock.count(key=KEYS[2]) >= 60
        state = keys_by_id(gw)[IDS[0]]
        assert 0 < state["cooldowns"]["gemini-2.5-flash"] <= 6.5
        # from now on, until the delay passes, no worker uses it for that model
        assert all(r.status_code == 200 for r in many(gw, 40))
        assert mock.count(key=KEYS[0], model="gemini-2.5-flash") == limited
        assert state["status"] == "ok"  # a quota never marks a key invalid
        # another model still uses that key
        before = mock.count(key=KEYS[0], model="gemini-2.5-pro")
        assert all(r.status_code == 200 for r in many(gw, 30, model="pro"))
        assert mock.count(key=KEYS[0], model="gemini-2.5-pro") > before
        # after the delay the key serves the model again
        mock.clear()
        time.sleep(max(0.0, state["cooldowns"]["gemini-2.5-flash"]) + 0.2)
        many(gw, 30)
        assert mock.count(key=KEYS[0], model="gemini-2.5-flash") > 0


def test_invalid_key_is_never_tried_again_by_any_worker(tmp_path, mock):
    mock.script(key=KEYS[1], behaviour=invalid_key())
    with Server(tmp_path, config(mock)) as gw:
        replies = many(gw, 80)
        assert all(r.status_code == 200 for r in replies)
        tried = mock.count(key=KEYS[1])
        assert 1 <= tried <= 8  # requests in flight before the first failure was recorded (8 at once)
        assert keys_by_id(gw)[IDS[1]]["status"] == "invalid"
        many(gw, 40)
        assert mock.count(key=KEYS[1]) == tried


def test_disable_through_one_worker_is_obeyed_by_all_within_a_second(tmp_path, mock):
    with Server(tmp_path, config(mock)) as gw:
        many(gw, 20)
        r = admin(gw, "POST", f"/keys/{IDS[2]}/disable", json={"reason": "test"})
        assert r.status_code == 200, r.text
        time.sleep(1.0)
        mock.clear()
        sessions = [requests.Session() for _ in range(8)]  # many connections: both workers serve
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: chat(gw, session=sessions[i % 8]), range(120)))
        assert all(r.status_code == 200 for r in replies)
        assert mock.count(key=KEYS[2]) == 0
        served_by = {c["key"] for c in mock.calls}
        assert served_by == {KEYS[0], KEYS[1]}


def test_all_keys_limited_gives_429_with_retry_after(tmp_path, mock):
    mock.script(model="gemini-2.5-flash", behaviour=error(429, retry_delay="20s"))
    with Server(tmp_path, config(mock)) as gw:
        first = chat(gw)
        assert first.status_code == 429 and 1 <= int(first.headers["Retry-After"]) <= 20
        started = time.monotonic()
        again = chat(gw)
        elapsed = time.monotonic() - started
        assert again.status_code == 429 and 15 <= int(again.headers["Retry-After"]) <= 20
        assert elapsed < 0.5  # answered from the key state, no upstream call
        assert again.json()["error"]["type"] == "rate_limit_error"
        assert chat(gw, "pro").status_code == 200  # other model unaffected


def test_state_survives_restart_and_kill_9(tmp_path, mock):
    mock.script(key=KEYS[0], model="gemini-2.5-flash", behaviour=error(429, retry_delay="300s"))
    mock.script(key=KEYS[1], behaviour=invalid_key())
    mock.script(key=KEYS[2], model="gemini-2.5-pro", behaviour=error(500))
    cfg = config(mock)
    gw = Server(tmp_path, cfg).start()
    try:
        assert chat(gw).status_code == 200  # KEYS[0] quota, KEYS[1] invalid, KEYS[2] answers
        for _ in range(2):
            many(gw, 10)
        for _ in range(40):  # transient failures on KEYS[2] (for pro) open its circuit
            chat(gw, "pro")
            if keys_by_id(gw)[IDS[2]]["circuit"] == "open":
                break
        assert admin(gw, "POST", f"/keys/{IDS[2]}/disable", json={"reason": "maintenance"}).status_code == 200
        before = keys_by_id(gw)
        # kill -9 a worker under load: transitions already written must survive
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    chat(gw)
                except requests.RequestException:
                    pass

        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.3)
        os.kill(gw.worker_pids()[0], signal.SIGKILL)
        time.sleep(0.5)
        stop.set()
        t.join()
    finally:
        gw.stop()
    assert before[IDS[0]]["cooldowns"].get("gemini-2.5-flash", 0) > 200
    assert before[IDS[1]]["status"] == "invalid"
    assert before[IDS[2]]["circuit"] == "open" and not before[IDS[2]]["enabled"]

    gw2 = Server(tmp_path, cfg)
    gw2.port = gw.port
    gw2.url = gw.url
    with gw2:
        after = keys_by_id(gw2)
    assert after[IDS[0]]["cooldowns"].get("gemini-2.5-flash", 0) > 200
    assert after[IDS[1]]["status"] == "invalid"
    assert after[IDS[2]]["circuit"] == "open"
    assert after[IDS[2]]["enabled"] is False and after[IDS[2]]["disabled_reason"] == "maintenance"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_snapshot_round_trip_and_refusals(tmp_path, mock):
    mock.script(key=KEYS[0], model="gemini-2.5-flash", behaviour=error(429, retry_delay="600s"))
    mock.script(key=KEYS[1], behaviour=invalid_key())
    cfg = config(mock)
    with Server(tmp_path, cfg) as gw:
        many(gw, 10)
        admin(gw, "POST", f"/keys/{IDS[2]}/disable", json={"reason": "snap"})
        admin(gw, "PATCH", f"/keys/{IDS[2]}", json={"weight": 3})
        via_api = admin(gw, "GET", "/snapshot").json()
    conf = str(gw.config_path)
    first = tmp_path / "first.json"
    assert run_cli("snapshot", "export", str(first), "--config", conf).returncode == 0
    doc = json.loads(first.read_text())
    assert {k["id"] for k in doc["keys"]} == set(IDS) == {k["id"] for k in via_api["keys"]}
    text = first.read_text()
    assert not any(secret in text for secret in KEYS)

    db = tmp_path / "keyrelay.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(db) + suffix):
            os.remove(str(db) + suffix)
    assert run_cli("migrate", "--config", conf).returncode == 0
    r = run_cli("snapshot", "import", str(first), "--config", conf)
    assert r.returncode == 0, r.stderr
    second = tmp_path / "second.json"
    assert run_cli("snapshot", "export", str(second), "--config", conf).returncode == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    a.pop("exported_at"), b.pop("exported_at")
    assert a == b

    conn = sqlite3.connect(db)
    audit_before = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    conn.close()
    tampered = json.loads(first.read_text())
    tampered["keys"][0]["enabled"] = not tampered["keys"][0]["enabled"]
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    r = run_cli("snapshot", "import", str(tmp_path / "tampered.json"), "--config", conf)
    assert r.returncode == 2 and "checksum" in r.stderr.lower() and "nothing changed" in r.stderr
    wrong = json.loads(first.read_text())
    wrong["version"] = 99
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    r = run_cli("snapshot", "import", str(tmp_path / "wrong.json"), "--config", conf)
    assert r.returncode == 2 and "version" in r.stderr
    (tmp_path / "garbage.json").write_text("{not json")
    assert run_cli("snapshot", "import", str(tmp_path / "garbage.json"), "--config", conf).returncode == 2
    third = tmp_path / "third.json"
    run_cli("snapshot", "export", str(third), "--config", conf)
    c = json.loads(third.read_text())
    c.pop("exported_at")
    assert c == a  # nothing changed by the refused imports
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == audit_before
    conn.close()
