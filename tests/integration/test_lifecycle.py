"""Process lifecycle of a real keyrelay (gunicorn + gevent): draining workers on reload, refusing to start
on a read-only database. Each test starts its own gateway; every wait is bounded."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.harness import REPO, Server, free_port, mock_config
from tests.mock_upstream import hold

KEY = "sk-lifecycle"


def upstream_config(url: str) -> dict:
    return {
        "server": {"graceful_timeout": 10},
        "providers": [{"name": "up", "type": "openai", "base_url": url + "/v1", "keys": [KEY]}],
        "models": [{"name": "chat", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
    }


def models(gw: Server) -> set[str]:
    return {m["id"] for m in requests.get(gw.url + "/v1/models", timeout=5).json()["data"]}


def reload_with_new_model(gw: Server) -> None:
    """SIGHUP with one more model; returns once a new connection sees it."""
    changed = json.loads(json.dumps(gw.config))
    changed["models"].append({"name": "after-reload", "targets": [{"provider": "up", "model": "gpt-4o"}]})
    gw.write_config(changed)
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "after-reload" not in models(gw):
        assert time.monotonic() < deadline, "the new config was not in force within 15 s"
        time.sleep(0.05)


def closed_by_server(conn: http.client.HTTPConnection, within: float) -> bool:
    """True when the server closes this idle kept-alive connection within ``within`` seconds."""
    conn.sock.settimeout(within)
    try:
        return conn.sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def chat_body(text: str, *, stream: bool = False) -> str:
    return json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}], "stream": stream})


# ---------------------------------------------------------------------------------------- draining


def test_reload_closes_idle_keepalive_connections_at_once(tmp_path, mock):
    """gunicorn's keepalive is 5 s: an old worker must not keep an idle connection (and serve the next
    request on it with the old config) until then."""
    with Server(tmp_path, upstream_config(mock.url)) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        conn.request("GET", "/v1/models")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()
        started = time.monotonic()
        gw.signal(signal.SIGHUP)
        assert closed_by_server(conn, within=3), "the draining worker kept its idle connection open"
        assert time.monotonic() - started < 3
        conn.close()


def test_reload_closes_busy_connections_after_their_response(tmp_path, mock):
    """A request in flight when the reload begins (here: its body not all sent yet) is answered with
    ``Connection: close``; a stream whose headers were out already ends normally, and its connection is
    closed after it: neither is reused for a request the old config would answer."""
    mock.clear()
    mock.script(key=KEY, behaviour=hold("lifecycle", after=1))
    with Server(tmp_path, upstream_config(mock.url)) as gw:
        streamed = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
        streamed.request("POST", "/v1/chat/completions", chat_body("streamed", stream=True),
                         {"Content-Type": "application/json"})
        stream = streamed.getresponse()  # headers and the first chunk are out, then the mock holds
        assert stream.status == 200 and stream.getheader("Connection") != "close"
        body = chat_body("plain").encode()
        plain = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        plain.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
        assert plain.recv(100).startswith(b"HTTP/1.1 100 Continue")  # a worker is serving the request

        reload_with_new_model(gw)
        plain.sendall(body)
        plain.settimeout(5)
        reply = b""
        while chunk := plain.recv(65536):  # until the server closes: it must not keep this connection
            reply += chunk
        head = reply.partition(b"\r\n\r\n")[0].decode().lower().splitlines()
        assert head[0].startswith("http/1.1 200"), reply[:300]
        assert "connection: close" in head[1:], head
        mock.release("lifecycle")
        events = stream.read().decode()
        assert events.rstrip().endswith("data: [DONE]"), events[-300:]
        assert closed_by_server(streamed, within=3), "the draining worker kept the stream's connection"
        plain.close()
        streamed.close()
    mock.clear()


# ----------------------------------------------------------------------------- read-only database


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file or directory unwritable, for root too: the immutable attribute (root ignores modes)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here: cannot make a path read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_database_refuses_to_start_with_one_line(tmp_path, what):
    db_path = tmp_path / "db" / "keyrelay.db"
    config = mock_config()
    config["server"]["database"] = str(db_path)
    gw = Server(tmp_path, config)  # writes the config file; not started through the harness
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    subprocess.run([sys.executable, "-m", "proxy.cli", "migrate", "--config", str(gw.config_path)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=30)
    with read_only(db_path if what == "file" else db_path.parent):
        proc = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(gw.config_path),
             "--bind", f"127.0.0.1:{free_port()}", "--workers", "2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
        )
    output = proc.stdout + proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("keyrelay:")]
    assert proc.returncode == 1, output
    assert len(ours) == 1 and "database not writable" in ours[0] and str(db_path) in ours[0], output
    assert "Traceback" not in output
    assert "Booting worker" not in output  # refused before forking


def database_failure_app() -> None:
    """A gunicorn app factory whose worker cannot open its database (the master's check passed)."""
    from proxy.store import db

    raise db.DatabaseError("database unusable: cannot open /nowhere/k.db: unable to open database file")


def test_worker_that_cannot_open_the_database_exits_1_with_one_line(tmp_path):
    gw = Server(tmp_path, mock_config())
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env.update(KEYRELAY_CONFIG=str(gw.config_path), KEYRELAY_BIND=f"127.0.0.1:{free_port()}",
               KEYRELAY_WORKERS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "config" / "gunicorn.conf.py"),
         "tests.integration.test_lifecycle:database_failure_app()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("keyrelay:")]
    assert proc.returncode == 1, output
    assert ours == ["keyrelay: cannot start a worker: database unusable: cannot open /nowhere/k.db: "
                    "unable to open database file"], output
    assert "Traceback" not in output
