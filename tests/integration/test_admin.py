"""Issue 5: the admin API through a real 2-worker gunicorn — auth, every action, its audit entry, and the
effect seen by every worker (admin listing and the request path)."""
from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.harness import Server
from tests.mock_upstream import error, invalid_key

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
K1, K2, K3 = "AIzaTEST-key-one-1111111", "AIzaTEST-key-two-2222222", "AIzaTEST-key-three-33333"
MODEL = "gemini-2.5-flash"


def gateway_config(mock_url: str) -> dict:
    return {
        "server": {"admin_token": TOKEN, "trusted_proxies": 1},
        "key_manager": {"default_cooldown_s": 60},
        "retry": {"attempts": 3, "backoff_base_s": 0.01, "retry_after_cap_s": 0.5},
        "providers": [{"name": "gem", "type": "gemini", "base_url": mock_url + "/v1beta",
                       "timeouts": {"connect": 2, "first_byte": 5, "idle": 5},
                       "keys": [K1, {"key": K2, "label": "team-b", "weight": 2}, K3]}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": MODEL}]}],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    with Server(tmp_path_factory.mktemp("admin"), gateway_config(mock.url)) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _clean(gw, mock):
    """Each test starts with every key enabled, healthy, at its config weight; the mock obeys."""
    mock.clear()
    yield
    mock.clear()
    for key in api(gw, "GET", "/keys").json()["keys"]:
        api(gw, "POST", f"/keys/{key['id']}/reset")
        api(gw, "POST", f"/keys/{key['id']}/enable")


def api(gw: Server, method: str, path: str, *, headers: dict | None = None, **kw) -> requests.Response:
    return requests.request(method, gw.url + "/admin/api" + path, headers={**AUTH, **(headers or {})},
                            timeout=10, **kw)


def ids(gw: Server) -> dict[str, str]:
    """Secret → key id, from the listing's hints (first 4 + … + last 3)."""
    keys = api(gw, "GET", "/keys").json()["keys"]
    by_hint = {k["hint"]: k["id"] for k in keys}
    return {s: by_hint[f"{s[:4]}…{s[-3:]}"] for s in (K1, K2, K3)}


def assert_error(r: requests.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert {"message", "type", "code"} <= set(err)
    for word in words:
        assert word in err["message"], err
    return err


def listings(gw: Server, n: int = 40) -> list[requests.Response]:
    """n concurrent GET /keys (fresh connections), so both workers answer."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: api(gw, "GET", "/keys", headers={"Connection": "close"}), range(n)))


def chat(gw: Server, text: str = "hi") -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", timeout=10, json={
        "model": "fast", "messages": [{"role": "user", "content": text}]})


def last_audit(gw: Server) -> dict:
    return api(gw, "GET", "/audit", params={"limit": 1}).json()["audit"][0]


# ------------------------------------------------------------------------------------------------ auth


# auth, the listing contract, unknown keys and request validation: tests/inprocess/test_admin_api.py


# ------------------------------------------------------------------------------------------------ actions


def test_disable_is_audited_and_every_worker_obeys(gw, mock):
    k1 = ids(gw)[K1]
    before = listings(gw)
    pids = {int(r.headers["X-Keyrelay-Worker"]) for r in before}
    assert pids == set(gw.worker_pids()), "both workers must answer"

    r = api(gw, "POST", f"/keys/{k1}/disable", json={"reason": "leaked in a notebook"},
            headers={"X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 200, r.text
    key = r.json()["key"]
    assert key["enabled"] is False and key["disabled_reason"] == "leaked in a notebook"
    done = time.monotonic()

    entry = last_audit(gw)
    assert entry["action"] == "disable" and entry["key_id"] == k1
    assert entry["actor"] == "admin@203.0.113.7"  # ProxyFix with server.trusted_proxies: 1
    assert entry["before"]["enabled"] is True and entry["after"]["enabled"] is False
    assert entry["after"]["disabled_reason"] == "leaked in a notebook"

    after = listings(gw)
    assert time.monotonic() - done < 1.0
    assert {int(r.headers["X-Keyrelay-Worker"]) for r in after} == pids
    for resp in after:
        key = next(k for k in resp.json()["keys"] if k["id"] == k1)
        assert key["enabled"] is False and key["usable"] is False, resp.headers["X-Keyrelay-Worker"]

    # the request path of every worker stops using the key (refresh interval 0.1 s < 1 s)
    time.sleep(0.3)
    mock.clear()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: chat(gw, f"q{i}"), range(24)))
    assert all(a.status_code == 200 for a in answers)
    used = {c["key"] for c in mock.calls}
    assert used == {K2, K3}


def test_enable_restores_the_key(gw, mock):
    k3 = ids(gw)[K3]
    api(gw, "POST", f"/keys/{k3}/disable")  # no body: reason optional
    assert last_audit(gw)["after"]["disabled_reason"] is None
    r = api(gw, "POST", f"/keys/{k3}/enable")
    assert r.status_code == 200 and r.json()["key"]["enabled"] is True
    entry = last_audit(gw)
    assert (entry["action"], entry["key_id"], entry["actor"]) == ("enable", k3, "admin@127.0.0.1")
    assert entry["before"]["enabled"] is False and entry["after"]["enabled"] is True
    for resp in listings(gw, 16):
        assert next(k for k in resp.json()["keys"] if k["id"] == k3)["enabled"] is True


def test_patch_weight(gw):
    k1 = ids(gw)[K1]
    r = api(gw, "PATCH", f"/keys/{k1}", json={"weight": 3.5})
    assert r.status_code == 200 and r.json()["key"]["weight"] == 3.5
    entry = last_audit(gw)
    assert (entry["action"], entry["key_id"]) == ("set_weight", k1)
    assert (entry["before"]["weight"], entry["after"]["weight"]) == (1.0, 3.5)
    for resp in listings(gw, 16):
        assert next(k for k in resp.json()["keys"] if k["id"] == k1)["weight"] == 3.5
    assert api(gw, "GET", f"/keys/{k1}").json()["key"]["weight"] == 3.5
    api(gw, "PATCH", f"/keys/{k1}", json={"weight": 1})


def test_reset_clears_cooldown_and_invalid(gw, mock):
    k = ids(gw)
    mock.script(key=K3, behaviour=error(429, retry_delay="60s"))
    mock.script(key=K2, behaviour=invalid_key())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert chat(gw).status_code == 200  # K1 always answers
        keys = {x["id"]: x for x in api(gw, "GET", "/keys").json()["keys"]}
        if keys[k[K3]]["cooldowns"] and keys[k[K2]]["status"] == "invalid":
            break
    assert MODEL in keys[k[K3]]["cooldowns"] and 50 < keys[k[K3]]["cooldowns"][MODEL] <= 60
    assert keys[k[K2]]["status"] == "invalid"
    # counters and last errors are flushed by the worker that saw them every 0.25 s: poll for them
    deadline = time.monotonic() + 5
    while True:
        listing = {x["id"]: x for x in api(gw, "GET", "/keys").json()["keys"]}
        if listing[k[K2]]["last_error"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "API key" in listing[k[K2]]["last_error"] and listing[k[K2]]["errors"] >= 1
    assert K2 not in json.dumps(keys) and K3 not in json.dumps(keys)

    for secret in (K3, K2):
        r = api(gw, "POST", f"/keys/{k[secret]}/reset")
        assert r.status_code == 200
        key = r.json()["key"]
        assert key["cooldowns"] == {} and key["status"] == "ok" and key["circuit"] == "closed"
        assert key["health"] == 1.0
        entry = last_audit(gw)
        assert (entry["action"], entry["key_id"]) == ("reset", k[secret])
    assert entry["before"]["status"] == "invalid" and entry["after"]["status"] == "ok"
    for resp in listings(gw, 16):
        keys = {x["id"]: x for x in resp.json()["keys"]}
        assert keys[k[K3]]["cooldowns"] == {} and keys[k[K2]]["status"] == "ok"


def test_revalidate_probes_now(gw, mock):
    k2 = ids(gw)[K2]
    mock.script(key=K2, behaviour=invalid_key())
    deadline = time.monotonic() + 10
    while api(gw, "GET", f"/keys/{k2}").json()["key"]["status"] != "invalid":
        assert time.monotonic() < deadline, "K2 never went invalid"
        chat(gw)

    probes = mock.count(key=K2, path="/v1beta/models")
    r = api(gw, "POST", f"/keys/{k2}/revalidate")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["probe"]["ok"] is False and body["probe"]["outcome"] == "auth"
    assert body["key"]["status"] == "invalid"
    assert mock.count(key=K2, path="/v1beta/models") == probes + 1
    assert K2 not in r.text

    mock.clear()
    r = api(gw, "POST", f"/keys/{k2}/revalidate")
    assert r.json()["probe"] == {"ok": True, "outcome": "ok", "error": None}
    assert r.json()["key"]["status"] == "ok"
    entries = api(gw, "GET", "/audit", params={"limit": 5}).json()["audit"]
    actions = [(e["action"], e["actor"]) for e in entries if e["key_id"] == k2]
    assert ("revalidated", "system") in actions and ("revalidate", "admin@127.0.0.1") in actions
    for resp in listings(gw, 16):
        assert next(k for k in resp.json()["keys"] if k["id"] == k2)["status"] == "ok"


# ------------------------------------------------------------------------------------------------ snapshot


def test_snapshot_export_import_and_refusal(gw):
    k1 = ids(gw)[K1]
    r = api(gw, "GET", "/snapshot")
    assert r.status_code == 200
    doc = r.json()
    assert doc["format"] == "keyrelay.snapshot" and len(doc["keys"]) == 3
    for secret in (K1, K2, K3, TOKEN):
        assert secret not in r.text

    api(gw, "POST", f"/keys/{k1}/disable", json={"reason": "before import"})
    tampered = copy.deepcopy(doc)
    tampered["keys"][0]["enabled"] = not tampered["keys"][0]["enabled"]  # checksum no longer matches
    err = assert_error(api(gw, "POST", "/snapshot", json=tampered), 400, "nothing changed")
    assert err["code"] == "invalid_snapshot"
    assert_error(api(gw, "POST", "/snapshot", data="not json", headers={"Content-Type": "application/json"}),
                 400, "not valid JSON")
    assert_error(api(gw, "POST", "/snapshot"), 400, "empty")
    assert api(gw, "GET", f"/keys/{k1}").json()["key"]["enabled"] is False  # refused: nothing changed

    r = api(gw, "POST", "/snapshot", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 3
    entry = next(e for e in api(gw, "GET", "/audit", params={"limit": 3}).json()["audit"]
                 if e["key_id"] == k1)
    assert entry["action"] == "import" and entry["before"]["enabled"] is False and entry["after"]["enabled"]
    for resp in listings(gw, 16):
        assert next(k for k in resp.json()["keys"] if k["id"] == k1)["enabled"] is True


# ------------------------------------------------------------------------------------------------ reload


def test_reload_validates_then_reloads_gracefully(gw, mock):
    old_pids = set(gw.worker_pids())
    good = gateway_config(mock.url)
    good["server"]["database"] = gw.config["server"]["database"]

    broken = copy.deepcopy(good)
    broken["server"]["workers"] = "many"
    gw.write_config(broken)
    err = assert_error(api(gw, "POST", "/reload"), 400, "server.workers")
    assert err["code"] == "invalid_config" and "keeps serving" in err["message"]
    gw.write_config({"server": good["server"]} | {"providers": "::"})
    assert_error(api(gw, "POST", "/reload"), 400, "providers")
    time.sleep(0.5)
    assert set(gw.worker_pids()) == old_pids  # nothing was signalled
    assert chat(gw).status_code == 200

    good["providers"][0]["keys"][0] = {"key": K1, "label": "relabelled"}
    gw.write_config(good)
    r = api(gw, "POST", "/reload")
    assert r.status_code == 200, r.text
    assert r.json()["reloaded"] is True and r.json()["master_pid"] == gw.proc.pid
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = set(gw.worker_pids())
        if len(pids) == 2 and not pids & old_pids:
            break
        time.sleep(0.1)
    assert len(pids) == 2 and not pids & old_pids, "workers were not replaced"
    k1 = ids(gw)[K1]
    for resp in listings(gw, 16):
        assert next(k for k in resp.json()["keys"] if k["id"] == k1)["label"] == "relabelled"
    assert chat(gw).status_code == 200
