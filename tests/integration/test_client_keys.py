"""Issue 13, client keys: a real gunicorn keyrelay (2 gevent workers) in front of the mock upstream.

The official openai and anthropic SDKs with a client key (chat, stream, tools), 401 in each dialect for a
missing / unknown / revoked / expired key, 403 and a hidden model for a disallowed one; changes through one
worker obeyed by both within 1 s (each worker reached through its own keep-alive connection, identified
by the admin API's X-Keyrelay-Worker); rotation grace; the safe default (a real upstream key and no client:
401 with the how-to); the CLI; no client secret in the database files (WAL included).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import pytest
import requests

from tests.conftest import ADMIN_TOKEN
from tests.harness import REPO, Server

UPSTREAM_KEY = "sk-upstream-clientkeys-1"
CONFIG_KEY = "kr-" + "G" * 43
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SECRETS: list[str] = []  # every client key this module saw: none may be in the database files


def config(mock, **extra) -> dict:
    cfg = {
        "server": {"admin_token": ADMIN_TOKEN},
        "providers": [{"name": "oai", "type": "openai", "base_url": mock.url + "/v1",
                       "keys": [UPSTREAM_KEY]}],
        "models": [{"name": "chat", "targets": [{"provider": "oai", "model": "gpt-4o-mini"}]},
                   {"name": "secret-model", "targets": [{"provider": "oai", "model": "gpt-4o"}]}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    cfg = config(mock, auth={"mode": "keys"},
                 clients=[{"name": "gitops", "key": CONFIG_KEY, "models": ["chat"]}])
    SECRETS.append(CONFIG_KEY)
    with Server(tmp_path_factory.mktemp("clientkeys"), cfg) as server:
        yield server


def create(gw, **body) -> tuple[dict, str]:
    r = requests.post(gw.url + "/admin/api/clients", json=body, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    SECRETS.append(r.json()["key"])
    return r.json()["client"], r.json()["key"]


def oai(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def ant(gw, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_openai_sdk_chat_stream_tools(gw):
    _, key = create(gw, name="sdk-openai", models=["chat"])
    client = oai(gw, key)
    r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == "echo: hello"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "streamed"}], stream=True) if c.choices)
    assert text == "echo: streamed"
    r = client.chat.completions.create(model="chat", tools=[WEATHER],
                                       messages=[{"role": "user", "content": "weather in Paris"}])
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    # the config client works as well (hash synced from the YAML)
    assert oai(gw, CONFIG_KEY).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "echo: x"


def test_anthropic_sdk_chat_stream_tools(gw):
    _, key = create(gw, name="sdk-anthropic", models=["chat"])
    client = ant(gw, key)
    m = client.messages.create(model="chat", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "echo: hi"
    with client.messages.stream(model="chat", max_tokens=64,
                                messages=[{"role": "user", "content": "flow"}]) as s:
        assert "".join(s.text_stream) == "echo: flow"
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": WEATHER["function"]["parameters"]}
    m = client.messages.create(model="chat", max_tokens=64, tools=[tool],
                               messages=[{"role": "user", "content": "weather in Oslo"}])
    assert any(b.type == "tool_use" and b.name == "get_weather" for b in m.content)


def test_401_in_each_dialect(gw):
    revoked, revoked_key = create(gw, name="to-revoke")
    assert requests.post(f"{gw.url}/admin/api/clients/{revoked['id']}/revoke", headers=ADMIN,
                         timeout=10).status_code == 200
    _, expired_key = create(gw, name="expired", expires_at="2020-01-01")
    cases = {"kr-" + "U" * 43: "Unknown", "not-a-key": "Unknown",
             revoked_key: "revoked", expired_key: "expired"}
    time.sleep(0.3)  # the revoke reached both workers (obeyed within ~0.1 s)
    for key, word in cases.items():
        with pytest.raises(openai.AuthenticationError) as e:
            oai(gw, key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key" and word in e.value.message
        with pytest.raises(anthropic.AuthenticationError) as a:
            ant(gw, key).messages.create(model="chat", max_tokens=8,
                                         messages=[{"role": "user", "content": "x"}])
        assert a.value.body["error"]["type"] == "authentication_error"
        assert word in a.value.body["error"]["message"]
    # no key at all (the SDKs refuse to send none): the raw wire, both dialects
    r = requests.post(gw.url + "/v1/chat/completions", json={"model": "chat", "messages": [
        {"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert "Missing client key" in r.json()["error"]["message"]
    r = requests.post(gw.url + "/v1/messages", json={"model": "chat", "max_tokens": 8, "messages": [
        {"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert "Missing client key" in r.json()["error"]["message"]


def test_disallowed_model_403_and_hidden(gw):
    _, key = create(gw, name="narrow", models=["chat"])
    with pytest.raises(openai.PermissionDeniedError) as e:
        oai(gw, key).chat.completions.create(model="secret-model",
                                             messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 403 and e.value.code == "model_not_allowed"
    with pytest.raises(anthropic.PermissionDeniedError):
        ant(gw, key).messages.create(model="secret-model", max_tokens=8,
                                     messages=[{"role": "user", "content": "x"}])
    assert [m.id for m in oai(gw, key).models.list()] == ["chat"]
    with pytest.raises(openai.NotFoundError):
        oai(gw, key).models.retrieve("secret-model")
    assert oai(gw, key).models.retrieve("chat").id == "chat"
    _, wide = create(gw, name="wide")  # no models: every model
    assert sorted(m.id for m in oai(gw, wide).models.list()) == ["chat", "secret-model"]


def pinned_sessions(gw) -> dict[int, requests.Session]:
    """One keep-alive session per worker (gunicorn keeps a connection on the worker that accepted it)."""
    out: dict[int, requests.Session] = {}
    for _ in range(60):
        s = requests.Session()
        r = s.get(gw.url + "/admin/api/audit?limit=1", headers=ADMIN, timeout=5)
        pid = int(r.headers["X-Keyrelay-Worker"])
        if pid in out:
            s.close()
        else:
            out[pid] = s
        if len(out) == 2:
            return out
    pytest.fail("could not reach both workers")


def until(sessions: dict[int, requests.Session], url: str, headers: dict, status: int) -> float:
    """Seconds until every worker answers ``status`` (polling each on its own connection); fails past 1 s."""
    t0 = time.monotonic()
    pending = dict(sessions)
    while pending:
        for pid, s in list(pending.items()):
            if s.get(url, headers=headers, timeout=5).status_code == status:
                del pending[pid]
        if time.monotonic() - t0 > 1.0:
            pytest.fail(f"workers {sorted(pending)} did not answer {status} within 1 s")
        time.sleep(0.01)
    return time.monotonic() - t0


def test_changes_obeyed_by_every_worker_within_1s(gw):
    sessions = pinned_sessions(gw)
    models = gw.url + "/v1/models"
    admin = next(iter(sessions.values()))  # every change goes through this one worker
    r = admin.post(gw.url + "/admin/api/clients", json={"name": "fleet"}, headers=ADMIN, timeout=5)
    key, cid = r.json()["key"], r.json()["client"]["id"]
    SECRETS.append(key)
    delays = {"create": until(sessions, models, {"Authorization": f"Bearer {key}"}, 200)}
    r = admin.patch(f"{gw.url}/admin/api/clients/{cid}", json={"models": ["secret-*"]}, headers=ADMIN,
                    timeout=5)
    assert r.status_code == 200
    delays["patch"] = until(sessions, gw.url + "/v1/models/chat", {"x-api-key": key}, 404)
    r = admin.post(f"{gw.url}/admin/api/clients/{cid}/rotate", json={"grace_s": 0}, headers=ADMIN, timeout=5)
    new = r.json()["key"]
    SECRETS.append(new)
    delays["rotate-old"] = until(sessions, models, {"x-api-key": key}, 401)
    delays["rotate-new"] = until(sessions, models, {"x-api-key": new}, 200)
    assert admin.post(f"{gw.url}/admin/api/clients/{cid}/revoke", headers=ADMIN, timeout=5).status_code == 200
    delays["revoke"] = until(sessions, models, {"x-api-key": new}, 401)
    print("obeyed by both workers after (s):", {k: round(v, 3) for k, v in delays.items()})


def test_rotation_grace(gw):
    sessions = pinned_sessions(gw)
    client, old = create(gw, name="graceful")
    until(sessions, gw.url + "/v1/models", {"x-api-key": old}, 200)
    r = requests.post(f"{gw.url}/admin/api/clients/{client['id']}/rotate", json={"grace_s": 2},
                      headers=ADMIN, timeout=5)
    new = r.json()["key"]
    SECRETS.append(new)
    assert r.json()["client"]["key_hint"] == f"{new[:7]}…{new[-3:]}"
    rotated_at = time.monotonic()
    until(sessions, gw.url + "/v1/models", {"x-api-key": new}, 200)
    for s in sessions.values():  # the old key keeps working during the grace, on every worker
        assert s.get(gw.url + "/v1/models", headers={"x-api-key": old}, timeout=5).status_code == 200
    time.sleep(max(0.0, 2.05 - (time.monotonic() - rotated_at)))
    for s in sessions.values():
        r = s.get(gw.url + "/v1/models", headers={"x-api-key": old}, timeout=5)
        assert r.status_code == 401 and "rotated" in r.json()["error"]["message"]


def test_admin_config_client_is_read_only(gw):
    clients = requests.get(gw.url + "/admin/api/clients", headers=ADMIN, timeout=5).json()["clients"]
    gitops = next(c for c in clients if c["name"] == "gitops")
    assert gitops["source"] == "config" and gitops["key_hint"] == "kr-GGGG…GGG"
    for method, path, body in (("PATCH", "", {"rpm": 1}), ("POST", "/revoke", None), ("POST", "/rotate", {})):
        r = requests.request(method, f"{gw.url}/admin/api/clients/{gitops['id']}{path}", json=body,
                             headers=ADMIN, timeout=5)
        assert r.status_code == 409 and r.json()["error"]["code"] == "config_client", (method, path)


def test_zz_no_client_secret_in_database_files(gw):
    """Last in the module: every key created above (and the config one) — hashes only on disk."""
    assert len(SECRETS) >= 8
    files = [p for p in Path(gw.config["server"]["database"]).parent.iterdir() if ".db" in p.name]
    assert any(p.name.endswith("-wal") for p in files)
    raw = b"".join(p.read_bytes() for p in files)
    for secret in SECRETS:
        assert secret.encode() not in raw and secret[3:].encode() not in raw
    assert not any(secret in gw.logs() for secret in SECRETS)


def cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", "clients", *args, "--config", str(cfg_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_safe_default_then_cli_client(tmp_path, mock):
    """A real upstream key, no client, no auth section: 401 with the how-to in both dialects, said in the
    startup log; a client created with the CLI (straight into the database) is obeyed by the workers."""
    cfg = config(mock, auth={})  # `auth: {}` = mode unset (tests.harness would otherwise open it)
    with Server(tmp_path, cfg) as server:
        assert "no client key exists" in server.logs()
        r = requests.post(server.url + "/v1/chat/completions", json={
            "model": "chat", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "keyrelay clients create" in r.json()["error"]["message"]
        with pytest.raises(anthropic.AuthenticationError) as e:
            ant(server, "unused").messages.create(model="chat", max_tokens=8,
                                                  messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 401
        made = cli(server.config_path, "create", "ops", "--models", "chat", "--rpm", "100",
                   "--expires", "2099-01-01")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert key.startswith("kr-") and "shown only now" in made.stderr
        SECRETS.append(key)
        deadline = time.monotonic() + 1.0
        while oai_status(server, key) != 200:
            assert time.monotonic() < deadline, "a CLI-created client was not obeyed within 1 s"
            time.sleep(0.02)
        listed = cli(server.config_path, "list")
        assert listed.returncode == 0 and "ops\truntime\tenabled" in listed.stdout
        assert key not in listed.stdout
        cid = listed.stdout.split("\t")[0]
        shown = cli(server.config_path, "show", cid)
        assert shown.returncode == 0 and "rpm: 100" in shown.stdout and key not in shown.stdout
        rotated = cli(server.config_path, "rotate", cid, "--grace-s", "0")
        assert rotated.returncode == 0 and rotated.stdout.strip().startswith("kr-")
        SECRETS.append(rotated.stdout.strip())
        assert cli(server.config_path, "revoke", cid).returncode == 0
        assert cli(server.config_path, "revoke", "c_unknown").returncode == 1
        assert cli(server.config_path, "create", "ops").returncode == 1  # the name is taken
        assert cli(server.config_path, "create", "bad name").returncode == 2
        assert cli(server.config_path, "create", "x", "--rpm", "0").returncode == 2
        deadline = time.monotonic() + 1.0
        while oai_status(server, rotated.stdout.strip()) != 401:
            assert time.monotonic() < deadline, "a CLI revoke was not obeyed within 1 s"
            time.sleep(0.02)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if ".db" in p.name)
    assert key.encode() not in raw and rotated.stdout.strip().encode() not in raw


def oai_status(server, key: str) -> int:
    return requests.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                        timeout=5).status_code
