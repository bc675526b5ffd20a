"""Client keys (store parts on both backends): the store rows, the registry (validation, config sync,
rotation), the per-worker view and the admin API in-process.
Cross-worker behaviour is in tests/integration/test_client_keys.py."""
import time

import pytest

from proxy.clients.auth import ClientAuth
from proxy.clients.model import config_client_id, key_hash
from proxy.clients.registry import ClientRegistry, validate
from proxy.config import parse_config
from proxy.errors import BadRequest, GatewayError, Unauthorized
from tests.conftest import ADMIN_TOKEN
from tests.harness import mock_config

KEY_A = "kr-" + "A" * 43
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def real_config(tmp_path, **extra):
    cfg = {"server": {"database": str(tmp_path / "k.db"), "admin_token": ADMIN_TOKEN},
           "providers": [{"name": "oai", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                          "keys": ["sk-test-upstream-0123456789"]}],
           "models": [{"name": "gpt-x", "targets": [{"provider": "oai", "model": "gpt-x"}]},
                      {"name": "gpt-y", "targets": [{"provider": "oai", "model": "gpt-y"}]}]}
    cfg.update(extra)
    return parse_config(cfg, source="<test>")


@pytest.fixture
def store(any_store):
    return any_store


def test_validate_names_the_field():
    ok = validate({"name": "ci", "models": ["gpt-*"], "rpm": 30, "model_limits": {"gpt-*": {"tpm": 5}},
                   "budget_usd": 1.5, "budget_period": "day", "expires_at": "2027-01-31",
                   "metadata": {"owner": "x"}}, partial=False)
    assert ok["rpm"] == 30 and ok["models"] == ("gpt-*",) and ok["expires_at"] > 0
    bad = [({}, "name"), ({"name": "a b"}, "name"), ({"name": "a", "rpm": 0}, "rpm"),
           ({"name": "a", "rpm": True}, "rpm"), ({"name": "a", "tpm": "5"}, "tpm"),
           ({"name": "a", "models": "gpt"}, "models"), ({"name": "a", "models": ["../x"]}, "models"),
           ({"name": "a", "budget_period": "year"}, "budget_period"),
           ({"name": "a", "budget_usd": -1}, "budget_usd"),
           ({"name": "a", "expires_at": "soon"}, "expires_at"),
           ({"name": "a", "model_limits": {"g*": {"rpm": 1, "x": 2}}}, "model_limits.g*"),
           ({"name": "a", "model_limits": []}, "model_limits"), ({"name": "a", "metadata": [1]}, "metadata"),
           ({"name": "a", "enabled": 1}, "enabled"), ({"name": "a", "colour": 1}, "colour"),
           ({"name": "a", "max_concurrent": -2}, "max_concurrent")]
    for body, field in bad:
        with pytest.raises(BadRequest) as e:
            validate(body, partial=False)
        assert e.value.param == field, body


def test_registry_create_rotate_revoke_and_no_secret_in_db(any_backend, store):
    clock = Clock()
    reg = ClientRegistry(store, clock)
    client, key = reg.create({"name": "ci", "rpm": 5}, "test")
    assert key.startswith("kr-") and len(key) == 46 and client.key_hint == f"{key[:7]}…{key[-3:]}"
    with pytest.raises(GatewayError) as e:
        reg.create({"name": "ci"}, "test")
    assert e.value.status == 409 and e.value.code == "client_exists"
    with store.snapshot() as tx:
        assert tx.client_keys() == [(key_hash(key), client.id, None)]
    after, key2 = reg.rotate(client.id, 30, "test")
    with store.snapshot() as tx:
        keys = {h: exp for h, _, exp in tx.client_keys()}
    assert keys == {key_hash(key): clock.t + 30, key_hash(key2): None}
    assert after.key_hint != client.key_hint
    revoked = reg.revoke(client.id, "test")
    assert revoked.revoked_at == clock.t and not revoked.enabled
    with pytest.raises(GatewayError) as e:
        reg.rotate(client.id, 0, "test")
    assert e.value.code == "client_revoked"
    with store.snapshot() as tx:
        actions = [a["action"] for a in tx.audit(10)]
    assert actions == ["client_revoke", "client_rotate", "client_create"]
    store.close()
    raw = any_backend.dump()
    assert key.encode() not in raw and key2.encode() not in raw and key_hash(key).encode() in raw


def test_auth_view_rotation_grace_expiry_and_disabled(tmp_path, store):
    clock = Clock()
    auth = ClientAuth(real_config(tmp_path), store, clock)
    with pytest.raises(Unauthorized, match="has none yet"):
        auth.authenticate({})
    client, key = auth.registry.create({"name": "ci", "models": ["gpt-x"]}, "test")
    assert auth.authenticate({"Authorization": f"Bearer {key}"}).id == client.id
    assert auth.authenticate({"x-api-key": key}).id == client.id
    with pytest.raises(Unauthorized, match="Missing"):
        auth.authenticate({})
    with pytest.raises(Unauthorized, match="Unknown"):
        auth.authenticate({"x-api-key": KEY_A})
    assert auth.allowed(client, "gpt-x") and not auth.allowed(client, "gpt-y")
    _, new = auth.registry.rotate(client.id, 10, "test")
    assert auth.authenticate({"x-api-key": key}).id == client.id  # within the grace
    clock.t += 10
    with pytest.raises(Unauthorized, match="rotated"):
        auth.authenticate({"x-api-key": key})
    assert auth.authenticate({"x-api-key": new}).id == client.id
    auth.registry.patch(client.id, {"expires_at": "2020-01-01"}, "test")
    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate({"x-api-key": new})
    auth.registry.patch(client.id, {"expires_at": None, "enabled": False}, "test")
    with pytest.raises(Unauthorized, match="disabled"):
        auth.authenticate({"x-api-key": new})
    auth.registry.patch(client.id, {"enabled": True}, "test")
    auth.registry.revoke(client.id, "test")
    with pytest.raises(Unauthorized, match="revoked"):
        auth.authenticate({"x-api-key": new})


def test_other_connection_changes_seen_within_refresh(tmp_path, any_backend, store):
    clock = Clock()
    auth = ClientAuth(real_config(tmp_path), store, clock)
    other = any_backend.open()
    try:
        _, key = ClientRegistry(other, clock).create({"name": "late"}, "cli")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                auth.authenticate({"x-api-key": key})
                break
            except Unauthorized:
                time.sleep(0.02)
        else:
            pytest.fail("a client created by another connection was not seen within 1 s")
    finally:
        other.close()


def test_last_used_is_batched(tmp_path, any_backend, store):
    clock = Clock()
    auth = ClientAuth(real_config(tmp_path), store, clock)
    client, key = auth.registry.create({"name": "ci"}, "test")
    v0 = any_backend.changes(store)
    for _ in range(50):
        auth.authenticate({"x-api-key": key})
    assert any_backend.changes(store) == v0  # no write per request
    auth.flush()
    with store.snapshot() as tx:
        assert tx.client(client.id).last_used_at == clock.t


def test_config_sync_hash_only_and_removed_client_disabled(tmp_path, store):
    clock = Clock()
    cfg = real_config(tmp_path, clients=[{"name": "gitops", "key": KEY_A, "rpm": 7, "models": ["gpt-*"]}])
    auth = ClientAuth(cfg, store, clock)
    cid = config_client_id("gitops")
    c = auth.authenticate({"x-api-key": KEY_A})
    assert c.id == cid and c.source == "config" and c.rpm == 7
    for action in (lambda: auth.registry.patch(cid, {"rpm": 1}, "t"), lambda: auth.registry.revoke(cid, "t"),
                   lambda: auth.registry.rotate(cid, 0, "t")):
        with pytest.raises(GatewayError) as e:
            action()
        assert e.value.status == 409 and e.value.code == "config_client"
    ClientAuth(cfg, store, clock)  # a second worker: idempotent
    with store.snapshot() as tx:
        assert len(tx.clients()) == 1 and len(tx.client_keys()) == 1
    gone = ClientAuth(real_config(tmp_path), store, clock)  # the YAML dropped it
    with pytest.raises(Unauthorized, match="disabled"):
        gone.authenticate({"x-api-key": KEY_A})
    with store.snapshot() as tx:
        kept = tx.client(cid)
    assert kept is not None and not kept.enabled


def test_refresh_check_is_cheap(tmp_path, store):
    clock = Clock()
    auth = ClientAuth(real_config(tmp_path), store, clock)
    _, key = auth.registry.create({"name": "ci"}, "test")
    headers = {"x-api-key": key}
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        auth.authenticate(headers)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    print(f"authenticate: {per_call_us:.1f} us per call")
    assert per_call_us < 200


def test_admin_api_in_process(make_app):
    cfg = mock_config(admin_token=ADMIN_TOKEN)
    cfg["auth"] = {"mode": "keys"}
    app = make_app(cfg)
    r = app.post("/admin/api/clients", json={"name": "ci", "models": ["mock-*"], "rpm": 30}, headers=AUTH)
    assert r.status_code == 201, r.json
    key, client = r.json["key"], r.json["client"]
    assert client["key_hint"] == f"{key[:7]}…{key[-3:]}" and "key_hash" not in client
    assert r.headers["Location"] == f"/admin/api/clients/{client['id']}"
    assert app.post("/admin/api/clients", json={"name": "ci"}, headers=AUTH).status_code == 409
    r = app.post("/admin/api/clients", json={"name": "x", "rpm": "many"}, headers=AUTH)
    assert r.status_code == 400 and r.json["error"]["param"] == "rpm"
    assert app.get("/admin/api/clients/c_nope", headers=AUTH).status_code == 404
    listed = app.get("/admin/api/clients", headers=AUTH).json["clients"]
    assert [c["name"] for c in listed] == ["ci"] and key not in str(listed)
    r = app.patch(f"/admin/api/clients/{client['id']}", json={"rpm": 60, "team": "infra"}, headers=AUTH)
    assert r.status_code == 200 and r.json["client"]["rpm"] == 60 and r.json["client"]["team"] == "infra"
    assert app.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    r = app.post(f"/admin/api/clients/{client['id']}/rotate", json={"grace_s": -1}, headers=AUTH)
    assert r.status_code == 400 and r.json["error"]["param"] == "grace_s"
    r = app.post(f"/admin/api/clients/{client['id']}/rotate", json={"grace_s": 0}, headers=AUTH)
    assert r.status_code == 200 and r.json["key"] != key
    assert app.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    new = r.json["key"]
    assert app.get("/v1/models", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    r = app.post(f"/admin/api/clients/{client['id']}/revoke", headers=AUTH)
    assert r.status_code == 200 and r.json["client"]["revoked"] is True
    r = app.get("/v1/models", headers={"Authorization": f"Bearer {new}"})
    assert r.status_code == 401 and "revoked" in r.json["error"]["message"]
    audit = app.get("/admin/api/audit", headers=AUTH).json["audit"]
    assert [a["action"] for a in audit[:4]] == ["client_revoke", "client_rotate", "client_update",
                                                "client_create"]
    assert key not in str(audit) and new not in str(audit)


def test_rotated_hashes_are_purged_after_a_week(tmp_path, store):
    clock = Clock()
    reg = ClientRegistry(store, clock)
    client, first = reg.create({"name": "ci"}, "test")
    reg.rotate(client.id, 0, "test")
    clock.t += 8 * 86400
    _, third = reg.rotate(client.id, 0, "test")
    with store.snapshot() as tx:
        hashes = {h for h, _, _ in tx.client_keys()}
    assert key_hash(first) not in hashes and key_hash(third) in hashes and len(hashes) == 2


def test_startup_notice(tmp_path, store):
    from proxy.clients.auth import startup_notice

    clock = Clock()
    cfg = real_config(tmp_path)
    assert "no client key exists" in startup_notice(cfg, store, clock.t)
    assert "open" in startup_notice(real_config(tmp_path, auth={"mode": "open"}), store, clock.t)
    with_config_client = real_config(tmp_path, clients=[{"name": "a", "key": KEY_A}])
    assert startup_notice(with_config_client, store, clock.t) is None
    mock_only = parse_config({**mock_config(), "server": {"database": str(tmp_path / "k.db")}}, source="<t>")
    assert startup_notice(mock_only, store, clock.t) is None
    client, _ = ClientRegistry(store, clock).create({"name": "rt"}, "test")
    assert startup_notice(cfg, store, clock.t) is None  # a runtime client counts
    ClientRegistry(store, clock).revoke(client.id, "test")
    assert "no client key exists" in startup_notice(cfg, store, clock.t)
