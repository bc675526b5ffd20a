"""Issue 19, runtime keys, through a real 2-worker gunicorn and the mock Gemini upstream over sockets:
a key added through one worker is used by the other within 1 s, a removed one dropped as fast; restarts
keep them; the database never holds the secret in clear; no secret key → the add is refused with how to
set one; import counting; ``test`` classifies a bad key as auth; the CLI on a running gateway's database."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from tests.harness import REPO, Server
from tests.mock_upstream import invalid_key

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG_KEY = "AIzaCONFIG-runtime-test-00001"
MODEL = "gemini-2.5-flash"
SECRET_KEY = Fernet.generate_key().decode()


def gateway_config(mock_url: str) -> dict:
    return {
        "server": {"admin_token": TOKEN},
        "retry": {"attempts": 2, "backoff_base_s": 0.01},
        "providers": [{"name": "gem", "type": "gemini", "base_url": mock_url + "/v1beta",
                       "timeouts": {"connect": 2, "first_byte": 5, "idle": 5}, "keys": [CONFIG_KEY]}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": MODEL}]}],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    server = Server(tmp_path_factory.mktemp("runtime"), gateway_config(mock.url),
                    env={"KEYRELAY_SECRET_KEY": SECRET_KEY})
    with server:
        config_kid = next(k["id"] for k in api(server, "GET", "/keys").json()["keys"])
        api(server, "POST", f"/keys/{config_kid}/disable")  # only runtime keys can serve in this module
        yield server


def api(gw: Server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, gw.url + "/admin/api" + path, headers={**AUTH, "Connection": "close"},
                            timeout=10, **kw)


def new_secret(tag: str) -> str:
    return f"AIzaRT-{tag}-{uuid.uuid4().hex}"


def chat(gw: Server, rid: str) -> int:
    return requests.post(gw.url + "/v1/chat/completions", timeout=10,
                         headers={"X-Request-ID": rid, "Connection": "close"},
                         json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).status_code


def request_lines(gw: Server, rids: set[str]) -> list[dict]:
    return [e for e in (json.loads(line) for line in gw.logs().splitlines() if line.startswith("{"))
            if e.get("event") == "request" and e.get("request_id") in rids]


def wall(stamp: str) -> float:
    """A log line's ``time`` (``2026-01-01T00:00:00.123Z``, UTC) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def until_every_worker_answered(gw: Server, deadline_s: float) -> tuple[dict[str, int], list[dict]]:
    """Chat requests in batches of 4 (fresh connections) until both workers have answered one, for at
    most ``deadline_s``: {request id: status}, and their log lines."""
    t0 = time.monotonic()
    statuses: dict[str, int] = {}
    lines: list[dict] = []
    with ThreadPoolExecutor(4) as ex:
        while time.monotonic() - t0 < deadline_s:
            rids = [uuid.uuid4().hex for _ in range(4)]
            statuses.update(zip(rids, ex.map(lambda r: chat(gw, r), rids), strict=True))
            lines = request_lines(gw, set(statuses))
            if len({e["pid"] for e in lines}) >= 2:
                break
    return statuses, lines


def test_added_key_is_used_by_every_worker_within_1s_and_dropped_as_fast(gw, mock):
    secret = new_secret("spread")
    r = api(gw, "POST", "/keys", json={"provider": "gem", "key": secret, "label": "spread"})
    added_at = time.time()
    assert r.status_code == 201, r.text
    kid, adder = r.json()["id"], int(r.headers["X-Keyrelay-Worker"])
    assert secret not in r.text
    statuses, lines = until_every_worker_answered(gw, 1.0)
    others = [wall(e["time"]) for e in lines if e["pid"] != adder]
    assert others, f"the other worker answered no request within 1 s: {lines}"
    print(f"first answer of the other worker with the new key {min(others) - added_at:.3f} s after the add")
    assert min(others) - added_at < 1.0
    assert set(statuses.values()) == {200}, statuses  # the only enabled key: every answer used it
    assert {e["key_id"] for e in lines} == {kid} and {e["pid"] for e in lines} == set(gw.worker_pids())
    assert mock.count(key=secret) >= len(statuses)

    before = mock.count(key=secret)
    r = api(gw, "DELETE", f"/keys/{kid}")
    assert r.status_code == 200, r.text
    statuses, lines = until_every_worker_answered(gw, 1.0)
    assert {e["pid"] for e in lines} == set(gw.worker_pids())
    assert set(statuses.values()) == {503}, statuses  # no usable key left, on both workers
    assert mock.count(key=secret) == before


def assert_not_in_clear(gw: Server, secrets: list[str]) -> None:
    files = sorted(Path(gw.config["server"]["database"]).parent.glob("keyrelay.db*"))
    assert {f.name for f in files} >= {"keyrelay.db", "keyrelay.db-wal"}
    for f in files:
        data = f.read_bytes()
        for s in secrets + [CONFIG_KEY]:
            assert s.encode() not in data, f"{s[:10]}… in clear in {f.name}"


def test_restart_keeps_runtime_keys_and_the_database_never_holds_them_in_clear(gw, mock):
    secrets = [new_secret("keep"), new_secret("keep2")]
    for s in secrets:
        assert api(gw, "POST", "/keys", json={"provider": "gem", "key": s}).status_code == 201
    assert_not_in_clear(gw, secrets)  # the adds are in the WAL now
    gw.stop()
    gw.start()
    listed = [k for k in api(gw, "GET", "/keys").json()["keys"] if k["source"] == "runtime"]
    assert len(listed) == 2 and all(k["usable"] for k in listed)
    mock.clear()
    assert chat(gw, uuid.uuid4().hex) == 200
    assert mock.calls[-1]["key"] in secrets
    assert_not_in_clear(gw, secrets)
    snapshot = api(gw, "GET", "/snapshot").text
    assert not any(s in snapshot for s in secrets) and "secret" not in snapshot.lower()
    for k in listed:
        api(gw, "DELETE", f"/keys/{k['id']}")


def test_import_100_lines_3_duplicates_2_malformed(gw):
    good = [new_secret(f"imp{i:03d}") for i in range(95)]
    lines = good + good[:3] + ["AIza has whitespace inside 0000", "AIza\x01control-0000000"]
    r = api(gw, "POST", "/keys/import", json={"provider": "gem", "keys": "\n".join(lines)})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("added", "duplicates", "invalid")} == {"added": 95, "duplicates": 3,
                                                                             "invalid": 2}
    assert [x["line"] for x in r.json()["invalid_lines"]] == [99, 100]
    runtime = [k for k in api(gw, "GET", "/keys").json()["keys"] if k["source"] == "runtime"]
    assert len(runtime) == 95
    for kid in r.json()["ids"]:
        assert api(gw, "DELETE", f"/keys/{kid}").status_code == 200


def test_test_reports_a_bad_key_as_auth_and_a_good_one_as_ok(gw, mock):
    good, bad = new_secret("good"), new_secret("bad")
    mock.script(key=bad, behaviour=invalid_key())
    ids = {s: api(gw, "POST", "/keys", json={"provider": "gem", "key": s}).json()["id"] for s in (good, bad)}
    ok = api(gw, "POST", f"/keys/{ids[good]}/test")
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] is True and ok.json()["outcome"] == "ok" and ok.json()["error"] is None
    assert isinstance(ok.json()["latency_ms"], float) and ok.json()["latency_ms"] >= 0
    no = api(gw, "POST", f"/keys/{ids[bad]}/test").json()
    assert (no["ok"], no["outcome"]) == (False, "auth") and no["error"] and bad not in no["error"]
    assert set(no) == {"ok", "outcome", "latency_ms", "error"}
    assert mock.count(key=bad) >= 1 and mock.count(key=good) >= 1
    audit = api(gw, "GET", "/audit", params={"limit": 2}).json()["audit"]
    assert [(e["action"], e["after"]["outcome"]) for e in audit] == [("test", "auth"), ("test", "ok")]
    for kid in ids.values():
        api(gw, "DELETE", f"/keys/{kid}")


def test_delete_of_a_config_key_is_409(gw):
    config_kid = next(k["id"] for k in api(gw, "GET", "/keys").json()["keys"] if k["source"] == "config")
    r = api(gw, "DELETE", f"/keys/{config_kid}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "config_key"
    assert "config file" in r.json()["error"]["message"]


def test_cli_add_on_the_running_gateways_database_is_used_at_once(gw, mock):
    secret = new_secret("cli")
    env = {"KEYRELAY_SECRET_KEY": SECRET_KEY, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "add", "--provider", "gem",
                          "--config", str(gw.config_path)], input=secret, capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    statuses, lines = until_every_worker_answered(gw, 1.0)
    assert set(statuses.values()) == {200} and {e["key_id"] for e in lines} == {out.stdout.strip()}
    assert mock.count(key=secret) >= len(statuses)
    api(gw, "DELETE", f"/keys/{out.stdout.strip()}")


def test_without_a_secret_key_the_add_is_refused_with_the_message(tmp_path, mock):
    with Server(tmp_path, gateway_config(mock.url)) as plain:
        r = api(plain, "POST", "/keys", json={"provider": "gem", "key": new_secret("nokey")})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "secret_key_not_set"
        assert "KEYRELAY_SECRET_KEY" in err["message"] and "server.secret_key" in err["message"]
        assert [k["source"] for k in api(plain, "GET", "/keys").json()["keys"]] == ["config"]
