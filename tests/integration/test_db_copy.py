"""Issue 20, test 5: ``keyrelay db copy`` from a SQLite database populated by a real keyrelay (2 gevent
workers, the mock upstream over sockets: client keys, a runtime key, usage, a disabled key, audit rows)
into a fresh database on the throwaway PostgreSQL server; every table's count matches on both sides; the
gateway then starts on PostgreSQL and serves: the disabled key stays disabled, the client key still
authenticates, the copied usage is reported, new ids follow the copied ones. And the refusals: a target
holding data (``--force`` replaces it), a failure half-way (nothing written), a schema newer than the
code, a missing file, a file that is no database, a bad URL, an unreachable server — one line each, the
password never shown, no traceback.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from proxy.store import backend
from tests.harness import REPO, Server, free_port

TOKEN = "admin-token-db-copy-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
SECRET_KEY = Fernet.generate_key().decode()
CONFIG_KEYS = ["sk-dbcopy-config-one-0001", "sk-dbcopy-config-two-0002"]
RUNTIME_KEY = "sk-dbcopy-runtime-key-0003"


def gateway_config(mock_url: str, database: str) -> dict:
    return {
        "server": {"admin_token": TOKEN, "database": database},
        "auth": {"mode": "keys"},
        "prices": {"gpt-4o-mini": {"input": 0.3, "output": 2.5}},
        "providers": [{"name": "oai", "type": "openai", "base_url": mock_url + "/v1", "keys": CONFIG_KEYS}],
        "models": [{"name": "chat", "targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}],
    }


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYRELAY_", "PG"))}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=REPO, capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=timeout)


def api(gw: Server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, gw.url + "/admin/api" + path, headers=ADMIN, timeout=10, **kw)


def chat(gw: Server, key: str, text: str = "hello") -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", timeout=10,
                         headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                         json={"model": "chat", "messages": [{"role": "user", "content": text}]})


def usage_requests(gw: Server) -> int:
    r = api(gw, "GET", "/usage", params={"group_by": "client"})
    assert r.status_code == 200, r.text
    return sum(row["requests"] for row in r.json()["rows"])


def sqlite_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT "
                                             "LIKE 'sqlite_%' AND name <> 'schema_migrations'")]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


def pg_counts(pg_server, url: str, tables: list[str]) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM \"{t}\"" for t in tables)
    out = pg_server.psql(sql, url.rsplit("/", 1)[1])
    return {name: int(n) for name, n in (line.split("|") for line in out.split())}


@pytest.fixture(scope="module")
def source(tmp_path_factory, mock) -> dict:
    """A SQLite database written by a real keyrelay, which is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("dbcopy")
    db = tmp / "keyrelay.db"
    gw = Server(tmp, gateway_config(mock.url, str(db)), env={"KEYRELAY_SECRET_KEY": SECRET_KEY})
    with gw:
        r = api(gw, "POST", "/clients", json={"name": "team-a", "models": ["chat"], "rpm": 1000})
        assert r.status_code == 201, r.text
        key_a = r.json()["key"]
        r = api(gw, "POST", "/clients", json={"name": "team-b", "budget_usd": 100})
        assert r.status_code == 201, r.text
        key_b = r.json()["key"]
        r = api(gw, "POST", "/keys", json={"provider": "oai", "key": RUNTIME_KEY, "label": "runtime"})
        assert r.status_code == 201, r.text
        runtime_kid = r.json()["id"]
        keys = api(gw, "GET", "/keys").json()["keys"]
        disabled = next(k["id"] for k in keys if k["source"] == "config")
        assert api(gw, "POST", f"/keys/{disabled}/disable", json={"reason": "moving"}).status_code == 200
        for i in range(6):
            assert chat(gw, key_a, f"a{i}").status_code == 200
        for i in range(3):
            assert chat(gw, key_b, f"b{i}").status_code == 200
        assert chat(gw, "kr-" + "x" * 43).status_code == 401  # recorded too (anonymous, status 401)
        deadline = time.monotonic() + 10
        while usage_requests(gw) < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert usage_requests(gw) == 10
    counts = sqlite_counts(db)
    conn = sqlite3.connect(db)
    max_id = {t: conn.execute(f"SELECT MAX(id) FROM {t}").fetchone()[0] for t in ("audit", "usage_records")}
    conn.close()
    for table in ("keys", "audit", "clients", "client_keys", "runtime_keys", "usage_records", "usage_daily",
                  "limiter_state", "key_history"):
        assert counts[table] > 0, (table, counts)  # populated by the gateway itself
    return {"db": db, "dir": tmp, "key_a": key_a, "disabled": disabled, "runtime": runtime_kid,
            "counts": counts, "mock": mock, "max_id": max_id}


def test_copy_then_the_gateway_serves_on_postgresql(source, pg_server, pg_url, tmp_path):
    res = cli("db", "copy", "--from", str(source["db"]), "--to", pg_url)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    counts = source["counts"]
    assert pg_counts(pg_server, pg_url, list(counts)) == counts
    assert sqlite_counts(source["db"]) == counts  # the source is left as it was
    for table, n in counts.items():  # the printed table: one row per table, both counts, ok
        assert any(line.split() == [table, str(n), str(n), "ok"] for line in res.stdout.splitlines()), table
    assert f"copied {sum(counts.values())} row(s) in {len(counts)} table(s)" in res.stdout
    assert "runtime key(s) copied encrypted" in res.stderr and "secret_key" in res.stderr

    gw = Server(tmp_path, gateway_config(source["mock"].url, pg_url), env={"KEYRELAY_SECRET_KEY": SECRET_KEY})
    with gw:
        keys = {k["id"]: k for k in api(gw, "GET", "/keys").json()["keys"]}
        assert keys[source["disabled"]]["enabled"] is False
        assert keys[source["runtime"]]["source"] == "runtime"
        assert usage_requests(gw) == 10  # the copied usage
        r = chat(gw, source["key_a"], "after the move")
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: after the move"
        deadline = time.monotonic() + 10
        while usage_requests(gw) < 11 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert usage_requests(gw) == 11  # a new usage record next to the copied ones (id sequence moved on)
        other = next(k for k in keys.values() if k["source"] == "config" and k["id"] != source["disabled"])
        assert api(gw, "POST", f"/keys/{other['id']}/disable").status_code == 200  # a new audit row
        # the master's start-up notice read the clients from PostgreSQL (it used to open the URL as a
        # SQLite path: a stray empty database under ./postgresql:/ and a false "no client key" warning)
        assert "no client key exists" not in gw.logs()
        assert not (REPO / "postgresql:").exists()
        audit = api(gw, "GET", "/audit").json()["audit"]
        assert audit[0]["key_id"] == other["id"] and audit[0]["id"] == source["max_id"]["audit"] + 1
    name = pg_url.rsplit("/", 1)[1]
    assert int(pg_server.psql("SELECT COUNT(*) FROM audit", name)) == counts["audit"] + 1
    assert int(pg_server.psql("SELECT COUNT(*) FROM usage_records", name)) == counts["usage_records"] + 1
    # new ids follow the copied ones (the identity sequences were moved past them)
    new_id = int(pg_server.psql("SELECT MAX(id) FROM usage_records", name))
    assert new_id == source["max_id"]["usage_records"] + 1


def test_a_target_with_data_is_refused_unless_forced(source, pg_server, pg_url):
    assert cli("db", "copy", "--from", str(source["db"]), "--to", pg_url).returncode == 0
    name = pg_url.rsplit("/", 1)[1]
    pg_server.psql("INSERT INTO meta(name, value) VALUES ('stray', 'row')", name)
    res = cli("db", "copy", "--from", str(source["db"]), "--to", pg_url)
    assert res.returncode == 1
    assert "already holds data" in res.stderr and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert int(pg_server.psql("SELECT COUNT(*) FROM meta", name)) == source["counts"]["meta"] + 1
    res = cli("db", "copy", "--from", str(source["db"]), "--to", pg_url, "--force")
    assert res.returncode == 0, res.stderr
    assert pg_counts(pg_server, pg_url, list(source["counts"])) == source["counts"]


def test_a_failure_half_way_writes_nothing(source, pg_server, pg_url):
    name = pg_url.rsplit("/", 1)[1]
    backend.migrate(pg_url)
    # keys are copied before usage_records; this makes the usage rows fail, after the keys went in
    pg_server.psql("ALTER TABLE usage_records ADD CONSTRAINT refuse_copy CHECK (status < 0) NOT VALID", name)
    res = cli("db", "copy", "--from", str(source["db"]), "--to", pg_url)
    assert res.returncode == 1, res.stdout
    assert "nothing written" in res.stderr and "Traceback" not in res.stderr
    counts = pg_counts(pg_server, pg_url, list(source["counts"]))
    seeded = {"client_changes": 1, "catalog_state": 1, "cache_totals": 7}  # what migrating inserted
    assert counts == {t: seeded.get(t, 0) for t in source["counts"]}


def test_a_count_mismatch_rolls_everything_back(source, pg_server, pg_url):
    name = pg_url.rsplit("/", 1)[1]
    backend.migrate(pg_url)
    pg_server.psql("CREATE RULE lose_audit AS ON INSERT TO audit DO INSTEAD NOTHING", name)  # rows vanish
    res = cli("db", "copy", "--from", str(source["db"]), "--to", pg_url)
    assert res.returncode == 1
    assert any(line.split() == ["audit", str(source["counts"]["audit"]), "0", "MISMATCH"]
               for line in res.stdout.splitlines()), res.stdout
    assert "counts differ in audit: rolled back, nothing written" in res.stderr
    assert int(pg_server.psql("SELECT COUNT(*) FROM keys", name)) == 0


def test_a_source_newer_than_the_code_is_refused(source, pg_server, pg_url, tmp_path):
    newer = tmp_path / "newer.db"
    shutil.copy(source["db"], newer)
    conn = sqlite3.connect(newer)
    conn.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (9999, '9999_x.sql', 0)")
    conn.commit()
    conn.close()
    res = cli("db", "copy", "--from", str(newer), "--to", pg_url)
    assert res.returncode == 1
    assert "newer than this keyrelay" in res.stderr and "Traceback" not in res.stderr
    assert pg_server.psql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'keys'",
                          pg_url.rsplit("/", 1)[1]).strip() == "0"  # the target was not even touched


def test_bad_inputs_one_line_each(source, pg_url, tmp_path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("not a database\n" * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    closed = free_port()
    password = "pw-must-not-show-9f3b"
    cases = [
        (["--from", str(tmp_path / "missing.db"), "--to", pg_url], 2, "no such file"),
        (["--from", str(not_db), "--to", pg_url], 2, "not a usable SQLite database"),
        (["--from", str(empty), "--to", pg_url], 2, "not a keyrelay database"),
        (["--from", str(source["db"]), "--to", "mysql://u@h/db"], 2, "expected postgresql://"),
        (["--from", str(source["db"]), "--to", "postgresql://u@127.0.0.1:99999/db"], 2, "invalid port"),
        (["--from", str(source["db"]), "--to", "postgresql://127.0.0.1/db"], 2, "needs a user"),
        (["--from", str(source["db"]), "--to", f"postgresql://u:{password}@127.0.0.1:{closed}/db"], 1,
         "cannot connect to postgresql://u@127.0.0.1"),
        (["--from", str(source["db"])], 2, "--to POSTGRES_URL is required"),
    ]
    for args, code, text in cases:
        res = cli("db", "copy", *args)
        assert res.returncode == code, (args, res.stderr)
        assert text in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert password not in res.stderr + res.stdout
        assert res.stdout == ""
    assert not (tmp_path / "missing.db").exists()  # a missing source is not created


def test_the_url_may_come_from_the_environment(source, pg_server, pg_url):
    res = cli("db", "copy", "--from", str(source["db"]), env={"KEYRELAY_DATABASE": pg_url})
    assert res.returncode == 0, res.stderr
    assert pg_counts(pg_server, pg_url, list(source["counts"])) == source["counts"]
