"""A real keyrelay under gunicorn + gevent on a free 127.0.0.1 port, for integration tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def nginx_conf(tmp: Path, site: str) -> Path:
    """A whole nginx.conf in ``tmp`` around a ``server``/``upstream`` site: foreground, its pid, logs and
    temp directories in ``tmp`` (as root, workers run as root so they can read them)."""
    temp = "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\nevents {{}}\n"
        f"http {{\n    access_log {tmp}/access.log;\n{temp}\n{site}\n}}\n")
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`keyrelay serve` in a subprocess; stderr (the JSON log) goes to a file the test can read."""

    def __init__(self, tmp_path: Path, config: dict, *, workers: int = 2, env: dict | None = None) -> None:
        self.dir = tmp_path
        self.config = config
        config.setdefault("server", {}).setdefault("database", str(tmp_path / "keyrelay.db"))
        self.config_path = tmp_path / "keyrelay.yaml"
        self.write_config(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = env or {}
        self.log_path = tmp_path / "keyrelay.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, config: dict) -> None:
        open_by_default(config)
        config.setdefault("catalog", {"sources": []})  # no internet here: fetch catalogs only where asked
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 30) -> Server:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this gateway is already running")  # a second master would be orphaned
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYRELAY_", "GEMINI_API_KEYS"))}
        env.update(self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(self.config_path),
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Until /healthz answers and every worker has booted (a test that needs both workers to answer
        must not depend on how fast the second one imports)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyrelay exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200 and self.workers_ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"keyrelay did not become healthy in {timeout}s:\n{self.logs()}")

    def workers_ready(self) -> bool:
        """All of the master's current workers have logged ``worker_ready`` (an info line)."""
        if self.config.get("server", {}).get("log_level", "info") not in ("debug", "info"):
            return True  # not logged at this level: /healthz alone
        pids = self.worker_pids()
        ready = {json.loads(line).get("pid") for line in self.logs().splitlines()
                 if '"worker_ready"' in line and line.startswith("{")}
        return len(pids) >= self.workers and set(pids) <= ready

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_by_default(config: dict) -> dict:
    """Tests about other things drive keyrelay without client keys: ``auth.mode: open`` unless the
    config says something about auth or clients (tests of the safe default pass ``auth: {}``)."""
    if "auth" not in config and "clients" not in config:
        config["auth"] = {"mode": "open"}
    return config


def mock_config(**server: object) -> dict:
    """The smallest config: the built-in mock provider behind two model names."""
    return {
        "server": dict(server),
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]}],
    }
