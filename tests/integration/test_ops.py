"""Issue 5: /readyz and /healthz truthfully, JSON request logs with request ids, and a full request cycle
with a known fake key that must appear in no log line, metric, admin response, snapshot or error body."""
from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.harness import REPO, Server, free_port
from tests.mock_upstream import error, invalid_key

TOKEN = "ops-admin-token-31337"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fresh(gw: Server, path: str, **kw) -> requests.Response:
    return requests.get(gw.url + path, headers={"Connection": "close"}, timeout=5, **kw)


def many(gw: Server, path: str, n: int = 16) -> list[requests.Response]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: fresh(gw, path), range(n)))


def wait_for(predicate, timeout: float = 1.0, step: float = 0.05):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(step)


# ------------------------------------------------------------------------------------------------ readiness


@pytest.fixture
def ready_gw(tmp_path):
    config = {
        "server": {"admin_token": TOKEN, "database": str(tmp_path / "db" / "keyrelay.db")},
        "providers": [{"name": "gem", "type": "gemini", "base_url": "http://127.0.0.1:9/v1beta",
                       "keys": ["AIzaREADY-key-one-000001", "AIzaREADY-key-two-000002"]}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }
    with Server(tmp_path, config) as gw:
        yield gw


def test_readyz_follows_keys_and_database(ready_gw, tmp_path):
    gw = ready_gw
    for r in many(gw, "/readyz"):
        assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["reasons"] == []

    keys = requests.get(gw.url + "/admin/api/keys", headers=AUTH, timeout=5).json()["keys"]
    for key in keys:
        requests.post(f"{gw.url}/admin/api/keys/{key['id']}/disable", headers=AUTH, timeout=5)
    time.sleep(1.0)  # every worker obeys within 1 s
    for r in many(gw, "/readyz"):
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "not_ready"
        assert any("no usable upstream key" in reason for reason in body["reasons"]), body
    assert all(r.status_code == 200 for r in many(gw, "/healthz"))  # liveness is not readiness

    requests.post(f"{gw.url}/admin/api/keys/{keys[0]['id']}/enable", headers=AUTH, timeout=5)
    time.sleep(1.0)
    assert all(r.status_code == 200 for r in many(gw, "/readyz"))

    # the database file becomes garbage (the workers' open connections keep the real one)
    db_dir, moved = tmp_path / "db", tmp_path / "db.real"
    db_dir.rename(moved)
    db_dir.mkdir()
    (db_dir / "keyrelay.db").write_bytes(b"this is not an SQLite database, just garbage\n" * 100)
    try:
        for r in many(gw, "/readyz", 8):
            assert r.status_code == 503, r.text
            reasons = r.json()["reasons"]
            assert reasons and "database" in reasons[0] and "not a database" in reasons[0], reasons
        assert fresh(gw, "/healthz").status_code == 200
        shutil.rmtree(db_dir)
        db_dir.write_text("a file where the database directory should be")
        r = fresh(gw, "/readyz")
        assert r.status_code == 503 and "database unusable" in r.json()["reasons"][0], r.text
    finally:
        if db_dir.is_dir():
            shutil.rmtree(db_dir)
        else:
            db_dir.unlink()
        moved.rename(db_dir)
    assert all(r.status_code == 200 for r in many(gw, "/readyz"))


# ------------------------------------------------------------------------------------------------ shutdown


def test_graceful_shutdown_closes_idle_connections_while_inflight_finishes(tmp_path):
    config = {
        "server": {"graceful_timeout": 10},
        "providers": [{"name": "mock", "type": "mock", "latency_ms": 2500}],
        "models": [{"name": "slow", "targets": [{"provider": "mock", "model": "mock-1"}]}],
    }
    gw = Server(tmp_path, config).start()
    try:
        keepalive = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        keepalive.request("GET", "/healthz")
        assert keepalive.getresponse().read() and keepalive.sock is not None  # a kept-alive connection
        slow: dict = {}

        def run_slow() -> None:
            started = time.monotonic()
            slow["response"] = requests.post(gw.url + "/v1/chat/completions", timeout=30, headers={
                "Connection": "close"}, json={  # else gunicorn keeps the idle connection 5 s (keepalive)
                "model": "slow", "messages": [{"role": "user", "content": "take your time"}]})
            slow["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=run_slow)
        thread.start()
        time.sleep(0.5)  # the slow request is in flight (2.5 s of simulated latency)
        gw.signal(signal.SIGTERM)
        time.sleep(0.2)  # the master forwards SIGTERM to the workers

        # the draining worker closed the idle kept-alive connection instead of serving more on it
        keepalive.sock.settimeout(3)
        assert keepalive.sock.recv(1) == b""
        keepalive.close()
        for _ in range(5):  # new connections: not accepted by a draining worker (503 if one slipped in)
            try:
                assert fresh(gw, "/healthz").status_code == 503
            except requests.ConnectionError:
                pass
            time.sleep(0.1)

        thread.join(timeout=15)
        resp = slow["response"]
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"].endswith("to: take your time")
        assert slow["seconds"] >= 2.5
        assert gw.proc.wait(timeout=15) == 0
        assert "graceful timeout" not in gw.logs().lower()
    finally:
        gw.stop()


# ----------------------------------------------------------------------------------------- secrets & logs

SECRET = "AIzaFAKE-secret-123456"
SECRET2 = "AIzaFAKE-other-key-987654"


def test_secrets_appear_nowhere_and_logs_are_json(tmp_path, mock):
    config = {
        "server": {"admin_token": TOKEN, "log_level": "debug"},
        "retry": {"attempts": 2, "backoff_base_s": 0.01, "retry_after_cap_s": 0.5},
        "providers": [{"name": "gem", "type": "gemini", "base_url": mock.url + "/v1beta",
                       "keys": [SECRET, {"key": SECRET2, "label": "second"}], "passthrough": "any",
                       "timeouts": {"connect": 2, "first_byte": 5, "idle": 5}}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }
    seen: list[str] = []  # every body and header the gateway sent back

    def keep(r: requests.Response) -> requests.Response:
        seen.append(r.text)
        seen.append(json.dumps(dict(r.headers)))
        return r

    def chat(text: str) -> requests.Response:
        return keep(requests.post(gw.url + "/v1/chat/completions", timeout=15, json={
            "model": "fast", "messages": [{"role": "user", "content": text}]}))

    def admin(method: str, path: str, **kw) -> requests.Response:
        return keep(requests.request(method, gw.url + "/admin/api" + path, headers=AUTH, timeout=10, **kw))

    with Server(tmp_path, config) as gw:
        # a normal answer, a stream, with a client request id echoed and one generated
        r = keep(requests.post(gw.url + "/v1/chat/completions", timeout=15,
                               headers={"X-Request-ID": "trace-abc-1"},
                               json={"model": "fast", "messages": [{"role": "user", "content": "hello"}]}))
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "trace-abc-1"
        r = keep(requests.post(gw.url + "/v1/chat/completions", timeout=15, json={
            "model": "fast", "stream": True, "messages": [{"role": "user", "content": "stream"}]}))
        assert r.status_code == 200 and len(r.headers["X-Request-ID"]) == 32
        keep(requests.post(gw.url + "/v1/embeddings", timeout=15,
                           json={"model": "gem/text-embedding-004", "input": "x"}))

        # upstream errors that quote the key back (each key sees its own), an invalid key, a spent quota
        for key in (SECRET, SECRET2):
            mock.script(key=key, behaviour=error(400, body={"error": {
                "code": 400, "status": "INVALID_ARGUMENT", "message": f"Bad request made with key {key}"}}))
        r = chat("quote my key")
        assert r.status_code == 400 and "Bad request made with key" in r.text
        mock.clear()
        mock.script(key=SECRET, behaviour=invalid_key())
        mock.script(key=SECRET2, behaviour=error(429, retry_delay="30s"))
        for i in range(3):
            chat(f"fail {i}")
        mock.clear()
        mock.script(key=SECRET, behaviour=error(500, body={"error": {
            "code": 500, "status": "INTERNAL", "message": f"crash while using {SECRET}"}}))
        keys = admin("GET", "/keys").json()["keys"]
        kid = next(k["id"] for k in keys if k["label"] is None)
        admin("POST", f"/keys/{kid}/revalidate")  # the probe quotes the key back too
        mock.clear()
        assert chat("still no key available").status_code in (429, 503)

        # the operations surface
        for path in ("/keys", f"/keys/{kid}", "/audit", "/snapshot"):
            assert admin("GET", path).status_code == 200
        admin("POST", f"/keys/{kid}/disable", json={"reason": "rotating"})
        admin("POST", f"/keys/{kid}/reset")
        admin("POST", "/snapshot", json=admin("GET", "/snapshot").json())
        admin("GET", "/keys/nope")
        admin("POST", f"/keys/{kid}/enable")
        keep(requests.get(gw.url + "/metrics", timeout=5))
        keep(requests.get(gw.url + "/readyz", timeout=5))
        keep(requests.get(gw.url + "/admin", timeout=5))
        keep(requests.get(gw.url + "/admin/api/keys", headers={"Authorization": f"Bearer {SECRET}"},
                          timeout=5))
        time.sleep(0.5)
        keep(requests.get(gw.url + "/metrics", timeout=5))
        snapshot = admin("GET", "/snapshot").text
        last_errors = [k["last_error"] for k in admin("GET", "/keys").json()["keys"]]
        assert any(e and "API key" in e for e in last_errors), last_errors  # errors are recorded, scrubbed

    logs = gw.logs()
    db = (tmp_path / "keyrelay.db").read_bytes()
    wal = (tmp_path / "keyrelay.db-wal").read_bytes() if (tmp_path / "keyrelay.db-wal").exists() else b""
    for secret in (SECRET, SECRET2, TOKEN):
        for text in seen:
            assert secret not in text
        assert secret not in logs
        assert secret not in snapshot
        assert secret.encode() not in db and secret.encode() not in wal
    assert "AIzaFAKE" not in snapshot  # not even a prefix: the hint lives in the key listing only

    # request log: one JSON object per line with the request's whole story
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests_logged = [e for e in entries if e.get("event") == "request"]
    first = next(e for e in requests_logged if e["request_id"] == "trace-abc-1")
    assert first["level"] == "info" and first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["status"] == 200 and first["model"] == "fast" and first["provider"] == "gem"
    assert first["key_id"].startswith("k_") and first["attempts"] == 1 and first["client"] == "127.0.0.1"
    assert first["latency_ms"] >= 0 and first["upstream_latency_ms"] > 0 and first["time"].endswith("Z")
    failed = [e for e in requests_logged if e["path"] == "/v1/chat/completions" and e["status"] >= 400]
    assert failed and all(e["attempts"] >= 1 for e in failed if e["status"] == 400)
    workers = {e["pid"] for e in entries if e.get("event") == "worker_ready"}
    assert len(workers) == 2 and {e["pid"] for e in requests_logged} <= workers
    assert all(line.startswith("{") for line in logs.splitlines() if '"logger"' in line)


def test_forwarded_for_is_ignored_without_trusted_proxies(tmp_path):
    config = {"server": {"admin_token": TOKEN},
              "providers": [{"name": "mock", "type": "mock"}],
              "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-1"}]}]}
    with Server(tmp_path, config, workers=1) as gw:
        kid = requests.get(gw.url + "/admin/api/keys", headers=AUTH, timeout=5).json()["keys"][0]["id"]
        requests.post(f"{gw.url}/admin/api/keys/{kid}/reset", timeout=5,
                      headers={**AUTH, "X-Forwarded-For": "198.51.100.23"})
        entry = requests.get(gw.url + "/admin/api/audit", headers=AUTH, timeout=5).json()["audit"][0]
        assert entry["actor"] == "admin@127.0.0.1"
    assert "198.51.100.23" not in [json.loads(x).get("client") for x in gw.logs().splitlines()
                                   if x.startswith("{")]


# ----------------------------------------------------------------------------------------- behind nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_behind_example_nginx_config(tmp_path):
    """config/nginx.conf as shipped (ports swapped): SSE arrives unbuffered, the client address is the
    one nginx saw (X-Forwarded-For, one trusted hop), a spoofed X-Forwarded-For is not believed."""
    config = {"server": {"admin_token": TOKEN, "trusted_proxies": 1},
              "providers": [{"name": "mock", "type": "mock", "chunk_delay_ms": 300}],
              "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-1"}]}]}
    with Server(tmp_path, config) as gw:
        port = free_port()
        site = (REPO / "config" / "nginx.conf").read_text()
        site = site.replace("server 127.0.0.1:4806;", f"server 127.0.0.1:{gw.port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        (tmp_path / "site.conf").write_text(site)
        temp = "".join(f"{name}_temp_path {tmp_path}/{name};\n"
                       for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log;\nevents {{}}\n"
            f"http {{\naccess_log off;\n{temp}include {tmp_path}/site.conf;\n}}\n")
        nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                  "-e", str(tmp_path / "nginx-error.log"), "-g", "daemon off;"])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _up(url + "/healthz"), timeout=5)

            # SSE through nginx: the first chunk arrives long before the stream ends
            started = time.monotonic()
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
            with requests.post(url + "/v1/chat/completions", stream=True, timeout=15, json=body) as r:
                lines = r.iter_lines()
                first = next(line for line in lines if line)
                first_at = time.monotonic() - started
                rest = [line for line in lines if line]
            assert first.startswith(b"data: {") and rest[-1] == b"data: [DONE]"
            assert time.monotonic() - started - first_at > 0.6, "the stream was buffered"

            # the client address nginx saw, via X-Forwarded-For; a client-sent X-Forwarded-For is not trusted
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=("127.0.0.5", 0))
            kid = requests.get(url + "/admin/api/keys", headers=AUTH, timeout=5).json()["keys"][0]["id"]
            conn.request("POST", f"/admin/api/keys/{kid}/reset",
                         headers={**AUTH, "X-Forwarded-For": "203.0.113.66", "X-Request-ID": "via-nginx-1"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("X-Request-ID") == "via-nginx-1"
            conn.close()
            entry = requests.get(url + "/admin/api/audit", headers=AUTH, timeout=5).json()["audit"][0]
            assert entry["actor"] == "admin@127.0.0.5"
            assert resp.getheader("X-Keyrelay-Worker")
            r = requests.get(url + "/v1/models", timeout=5)
            assert len(r.headers["X-Request-ID"]) == 32  # generated by nginx when the client sent none
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    logged = [json.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
    entry = next(e for e in logged if e.get("request_id") == "via-nginx-1")
    assert entry["client"] == "127.0.0.5"


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
