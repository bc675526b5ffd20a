"""Drive a mock upstream running in another process: HTTP control client and subprocess launcher."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from typing import Any

from tests.mock_upstream.core import REPO
from tests.mock_upstream.script import as_behaviour


class RemoteMock:
    """The MockUpstream scripting API over /_mock/* (for benchmarks, nginx tests, other processes)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _req(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (local URL)
            return json.loads(resp.read())

    def script(self, key: str | None = None, model: str | None = None, behaviour: Any = None, *,
               dialect: str | None = None, times: int | None = None) -> int:
        b = behaviour if isinstance(behaviour, dict) else as_behaviour(behaviour).to_dict()
        payload = {"key": key, "model": model, "dialect": dialect, "times": times, "behaviour": b}
        return self._req("POST", "/_mock/script", payload)["id"]

    def clear(self, calls: bool = True) -> None:
        self._req("POST", "/_mock/clear", {"calls": calls})

    def release(self, name: str) -> None:
        self._req("POST", "/_mock/release", {"name": name})

    def calls_where(self, **filters: str) -> list[dict]:
        query = ("?" + urllib.parse.urlencode(filters)) if filters else ""
        return self._req("GET", "/_mock/calls" + query)["calls"]

    @property
    def calls(self) -> list[dict]:
        return self.calls_where()

    def count(self, **filters: str) -> int:
        return len(self.calls_where(**filters))

    def health(self) -> bool:
        return bool(self._req("GET", "/_mock/health").get("ok"))


class MockProcess:
    """``python -m tests.mock_upstream.server`` as a subprocess (gevent by default); a context manager."""

    def __init__(self, port: int = 0, *, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0,
                 gevent: bool = True, record: bool = True) -> None:
        self.args = [sys.executable, "-m", "tests.mock_upstream.server", "--port", str(port),
                     "--latency-ms", str(latency_ms), "--chunk-delay-ms", str(chunk_delay_ms)]
        if not gevent:
            self.args.append("--threads")
        if not record:
            self.args.append("--no-record")
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> MockProcess:
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"mock upstream did not start: {line!r}")
        self.url = line.rsplit("listening on ", 1)[1].strip()
        return self

    @property
    def remote(self) -> RemoteMock:
        return RemoteMock(self.url)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> MockProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

