"""Issue 6, scenario 8: a stream through a real nginx (Debian's package) configured with config/nginx.conf.

nginx runs in the foreground on a free loopback port with pid, logs and temp files under tmp_path; the
shipped config is wrapped in a minimal main context and only its listen address and upstream server are
rewritten (each rewrite must match exactly once, so a changed config/nginx.conf fails loudly here).
"""
from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import REPO, Server, free_port, nginx_conf
from tests.integration import resilience_report
from tests.mock_upstream import MockUpstream, pace

pytestmark = pytest.mark.fault

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CLIENT_ADDR = "127.0.0.2"  # the test connects from here: nginx talks to keyrelay from 127.0.0.1
CHUNKS, GAP = 5, 0.3


def render_nginx_conf(tmp: Path, listen_port: int, keyrelay_port: int) -> Path:
    site = (REPO / "config" / "nginx.conf").read_text()
    site, n_listen = re.subn(r"^(\s*)listen\s+[^;]+;", rf"\1listen 127.0.0.1:{listen_port};", site,
                             flags=re.M)  # the uncommented one
    site, n_upstream = re.subn(r"server\s+127\.0\.0\.1:\d+;", f"server 127.0.0.1:{keyrelay_port};", site)
    assert (n_listen, n_upstream) == (1, 1), "config/nginx.conf changed shape: update render_nginx_conf"
    return nginx_conf(tmp, site)


@pytest.fixture
def nginx_front(tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/test installs Debian's nginx)")
    with MockUpstream() as mock:
        cfg = {"server": {"trusted_proxies": 1, "log_level": "info"},
               "providers": [{"name": "up", "type": "openai", "base_url": mock.url + "/v1",
                              "keys": ["sk-nginx"]}],
               "models": [{"name": "chat", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}]}
        (tmp_path / "keyrelay").mkdir()
        with Server(tmp_path / "keyrelay", cfg) as gw:
            ngx_dir = tmp_path / "nginx"
            ngx_dir.mkdir()
            port = free_port()
            conf = render_nginx_conf(ngx_dir, port, gw.port)
            check = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(ngx_dir)], capture_output=True,
                                   text=True, timeout=10)
            assert check.returncode == 0, check.stderr
            proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(ngx_dir)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                        break
                    except OSError:
                        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                        time.sleep(0.05)
                yield mock, gw, port
            finally:
                proc.send_signal(signal.SIGQUIT)  # graceful stop
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.stderr.close()


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def test_stream_through_nginx_unbuffered_with_forwarded_client(nginx_front, request):
    row = resilience_report.row(request.config, "8")
    mock, gw, port = nginx_front
    mock.script(behaviour=pace(chunks=CHUNKS, delay=GAP))
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_ADDR, 0))
    body = json.dumps({"model": "chat", "stream": True,
                       "messages": [{"role": "user", "content": "one two three four five six"}]})
    conn.request("POST", "/v1/chat/completions", body=body, headers={
        "Content-Type": "application/json", "X-Request-ID": "nginx-fault-8",
        "X-Forwarded-For": "198.51.100.66"})  # a client-supplied value that must not be trusted
    resp = conn.getresponse()
    t0 = time.monotonic()
    arrivals: list[tuple[float, dict | str]] = []
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            data = line[6:].strip().decode()
            arrivals.append((time.monotonic() - t0, data if data == "[DONE]" else json.loads(data)))
    conn.close()
    content = [t for t, c in arrivals if isinstance(c, dict) and c.get("choices")
               and c["choices"][0]["delta"].get("content")]
    gaps = [b - a for a, b in zip(content, content[1:], strict=False)]
    time.sleep(0.2)
    entry = next(e for e in map(_json, gw.logs().splitlines())
                 if e.get("event") == "request" and e.get("request_id") == "nginx-fault-8")
    row.errors = "none" if resp.status == 200 and arrivals[-1][1] == "[DONE]" else f"HTTP {resp.status}"
    row.did = [f"nginx passed {len(content)} content chunks as they came: gaps "
               f"{', '.join(f'{g:.2f}' for g in gaps)} s (upstream paced {GAP} s), first after "
               f"{content[0]:.2f} s, not all at the end",
               f"request log client address {entry.get('client')} (the client's, from X-Forwarded-For; "
               f"nginx connected from 127.0.0.1; a client-sent X-Forwarded-For 198.51.100.66 was ignored)"]
    row.seconds = time.monotonic() - started
    assert resp.status == 200 and resp.getheader("X-Keyrelay-Route") == "up/gpt-4o-mini"
    assert arrivals[-1][1] == "[DONE]" and len(content) == CHUNKS
    assert all(g > GAP / 2 for g in gaps), gaps  # buffered output would arrive in one burst
    assert content[-1] - content[0] >= (CHUNKS - 1) * GAP * 0.8
    assert entry["client"] == CLIENT_ADDR
    row.verified = True
