"""Issue 19, command line and files: check-config honours KEYRELAY_CONFIG, snapshot options in any order
(and saying what they did), a relative database path is relative to the config file, process titles,
the pidfile, and one clear line when the port is taken."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.harness import REPO, Server, free_port, mock_config


def cli(*args: str, env: dict | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=timeout)


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_config_honours_keyrelay_config(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", {"server": {"port": "nope"}})
    out = cli("check-config", env={"KEYRELAY_CONFIG": str(bad)})
    assert out.returncode == 2 and "server.port" in out.stderr
    good = write_config(tmp_path / "good.yaml", mock_config())
    out = cli("check-config", env={"KEYRELAY_CONFIG": str(good)})
    assert out.returncode == 0, out.stderr
    assert "config ok" in out.stdout
    assert cli("check-config", str(bad), env={"KEYRELAY_CONFIG": str(good)}).returncode == 2  # PATH wins


def test_snapshot_options_in_any_order_and_what_was_done(tmp_path: Path) -> None:
    config = {"server": {"database": str(tmp_path / "k.db")}}
    config["providers"] = [{"name": "g", "type": "gemini", "base_url": "http://127.0.0.1:9/v1beta",
                            "keys": ["AIzaFAKE-one-aaaaaaaaaaaaaaaa", "AIzaFAKE-two-bbbbbbbbbbbbbbbb"],
                            "models": ["gemini-2.5-flash"]}]
    conf = str(write_config(tmp_path / "k.yaml", config))
    out_file = tmp_path / "snap.json"
    for args in (("snapshot", "export", "--config", conf, str(out_file)),
                 ("snapshot", "--config", conf, "export", str(out_file)),
                 ("snapshot", "export", str(out_file), "--config", conf)):
        out_file.unlink(missing_ok=True)
        res = cli(*args)
        assert res.returncode == 0, (args, res.stderr)
        assert f"snapshot exported: 2 key(s) to {out_file}" in res.stderr
        assert len(json.loads(out_file.read_text())["keys"]) == 2
    res = cli("snapshot", "export", "--config", conf)  # stdout stays pure JSON; the note goes to stderr
    assert json.loads(res.stdout)["keys"] and "to stdout" in res.stderr
    for args in (("snapshot", "import", str(out_file), "--config", conf),
                 ("snapshot", "--config", conf, "import", str(out_file))):
        res = cli(*args)
        assert res.returncode == 0, (args, res.stderr)
        assert f"snapshot imported: 2 key(s) from {out_file}" in res.stdout
    res = cli("snapshot", "import", "--config", conf)
    assert res.returncode == 2 and "file" in res.stderr


def test_relative_database_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = mock_config()
    config["server"] = {"database": "data/keyrelay.db"}
    conf = write_config(tmp_path / "etc" / "keyrelay.yaml", config)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli("migrate", "--config", str(conf), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "etc" / "data" / "keyrelay.db").exists()
    assert not (elsewhere / "data").exists()
    assert str(tmp_path / "etc" / "data" / "keyrelay.db") in res.stdout


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_process_titles_and_pidfile(tmp_path: Path) -> None:
    config = mock_config()
    config["server"] = {"database": str(tmp_path / "k.db"), "pidfile": "run/keyrelay.pid"}
    gw = Server(tmp_path, config, workers=2)
    with gw:
        pidfile = tmp_path / "run" / "keyrelay.pid"  # relative to the config file's directory
        assert int(pidfile.read_text().strip()) == gw.proc.pid
        assert _title(gw.proc.pid) == "keyrelay: master"
        assert sorted(_title(p) for p in gw.worker_pids()) == ["keyrelay: worker 1", "keyrelay: worker 2"]
    assert not pidfile.exists()  # the master removes it when it exits


def test_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    conf = write_config(tmp_path / "k.yaml", mock_config(database=str(tmp_path / "k.db")))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        started = time.monotonic()
        res = cli("serve", "--config", str(conf), "--bind", f"127.0.0.1:{port}", timeout=30)
        assert time.monotonic() - started < 10  # not gunicorn's five retries a second apart
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"keyrelay: cannot listen on 127.0.0.1:{port}: the address is already in use "
                     "(another keyrelay running?)"]
