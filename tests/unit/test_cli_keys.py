"""``keyrelay keys add|import|list|remove|generate-secret|rotate-secret`` on a database directly (both
store backends: a SQLite file, a PostgreSQL URL)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from proxy.cli import main
from proxy.keys import key_id
from tests.harness import REPO

CONFIG_KEY = "AIzaCONFIG-key-0000000000001"
NEW = "AIzaCLI-added-key-00000000042"


@pytest.fixture
def config(tmp_path, any_database, monkeypatch) -> Path:
    path = tmp_path / "keyrelay.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"database": any_database},
        "providers": [{"name": "gem", "type": "gemini", "keys": [CONFIG_KEY]},
                      {"name": "local", "type": "ollama"}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }))
    monkeypatch.delenv("KEYRELAY_SECRET_KEYS_PREVIOUS", raising=False)
    monkeypatch.setenv("KEYRELAY_SECRET_KEY", Fernet.generate_key().decode())
    return path


def run(config: Path, *argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["keys", *argv, "--config", str(config)])


def listing(config, capsys, monkeypatch) -> list[list[str]]:
    capsys.readouterr()
    assert run(config, "list", monkeypatch=monkeypatch) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def test_add_reads_the_secret_from_stdin_and_prints_the_id(config, any_backend):
    """A real process: the key goes in on stdin, the id comes out; the database holds no clear secret."""
    env = {"KEYRELAY_SECRET_KEY": Fernet.generate_key().decode(), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "add", "--provider", "gem", "--label",
                          "ops", "--config", str(config)], input=NEW + "\n", capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == key_id("gem", NEW)
    assert "AIza…042" in out.stderr and NEW not in out.stdout + out.stderr
    assert NEW.encode() not in any_backend.dump()


def test_add_list_remove(config, capsys, monkeypatch):
    assert run(config, "add", "--provider", "gem", "--label", "night", "--weight", "2", stdin=NEW + "\n",
               monkeypatch=monkeypatch) == 0
    kid = key_id("gem", NEW)
    rows = {r[0]: r for r in listing(config, capsys, monkeypatch)}
    assert rows[kid] == [kid, "gem", "runtime", "usable", "night", "AIza…042", "2"]
    assert rows[key_id("gem", CONFIG_KEY)][2:4] == ["config", "usable"]
    assert NEW not in str(rows)
    assert run(config, "remove", kid, monkeypatch=monkeypatch) == 0
    assert kid not in {r[0] for r in listing(config, capsys, monkeypatch)}
    capsys.readouterr()
    assert run(config, "remove", key_id("gem", CONFIG_KEY), monkeypatch=monkeypatch) == 1
    assert "comes from the config file" in capsys.readouterr().err
    assert run(config, "remove", "k_0000000000", monkeypatch=monkeypatch) == 1


def test_add_refusals_exit_2_with_the_message(config, capsys, monkeypatch):
    for argv, stdin, words in (
            (("add", "--provider", "gem"), "", "Missing 'key'"),
            (("add", "--provider", "gem"), "AIza with spaces inside 00000\n", "whitespace"),
            (("add", "--provider", "gem"), NEW + "\n" + NEW + "x\n", "keyrelay keys import"),
            (("add", "--provider", "local"), NEW + "\n", "takes no API key"),
            (("add", "--provider", "nope"), NEW + "\n", "configured providers")):
        capsys.readouterr()
        assert run(config, *argv, stdin=stdin, monkeypatch=monkeypatch) == 2, argv
        err = capsys.readouterr().err
        assert words in err and NEW not in err
    with pytest.raises(SystemExit) as exc:  # no way to put the secret on the command line
        main(["keys", "add", "--provider", "gem", NEW, "--config", str(config)])
    assert exc.value.code == 2


def test_add_without_secret_key_exits_2_saying_how_to_set_one(config, capsys, monkeypatch):
    monkeypatch.delenv("KEYRELAY_SECRET_KEY")
    assert run(config, "add", "--provider", "gem", stdin=NEW + "\n", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "KEYRELAY_SECRET_KEY" in err and "server.secret_key" in err and "generate-secret" in err


def test_import_file_counts(config, tmp_path, capsys, monkeypatch):
    keys = [f"AIzaCLI-import-{i:016d}" for i in range(10)]
    f = tmp_path / "keys.txt"
    f.write_text("\n".join(keys[:6]) + "\n" + ",".join(keys[6:]) + "\n" + keys[0] + "\nbad key here\n")
    assert run(config, "import", "--provider", "gem", str(f), monkeypatch=monkeypatch) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "added 10, duplicates 1, invalid 1"
    assert "line 9: whitespace inside the key" in out.err and "bad key" not in out.err
    assert sum(r[2] == "runtime" for r in listing(config, capsys, monkeypatch)) == 10
    assert run(config, "import", "--provider", "gem", str(tmp_path / "missing"), monkeypatch=monkeypatch) == 2


def test_generate_and_rotate_secret(config, capsys, monkeypatch):
    assert run(config, "generate-secret", monkeypatch=monkeypatch) == 0
    new_key = capsys.readouterr().out.strip()
    Fernet(new_key)  # a valid Fernet key
    assert run(config, "add", "--provider", "gem", stdin=NEW, monkeypatch=monkeypatch) == 0
    old = os.environ["KEYRELAY_SECRET_KEY"]
    monkeypatch.setenv("KEYRELAY_SECRET_KEY", new_key)
    monkeypatch.setenv("KEYRELAY_SECRET_KEYS_PREVIOUS", old)
    capsys.readouterr()
    assert run(config, "rotate-secret", monkeypatch=monkeypatch) == 0
    assert "re-encrypted 1 runtime key(s)" in capsys.readouterr().out
    monkeypatch.delenv("KEYRELAY_SECRET_KEYS_PREVIOUS")  # the old key is no longer needed
    rows = {r[0]: r for r in listing(config, capsys, monkeypatch)}
    assert rows[key_id("gem", NEW)][3] == "usable"
