"""The admin API's auth, listing contract and validation, in process (create_app + Flask's test client).
What every worker must see after an action stays in tests/integration/test_admin.py (real gunicorn)."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
K1, K2, K3 = "AIzaTEST-key-one-1111111", "AIzaTEST-key-two-2222222", "AIzaTEST-key-three-33333"


def admin_config(**server: object) -> dict:
    return {
        "server": {"trusted_proxies": 1, **server},
        "providers": [{"name": "gem", "type": "gemini", "base_url": "http://127.0.0.1:9/v1beta",
                       "keys": [K1, {"key": K2, "label": "team-b", "weight": 2}, K3]}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }


@pytest.fixture
def app(make_app) -> FlaskClient:
    return make_app(admin_config(admin_token=TOKEN))


def api(app: FlaskClient, method: str, path: str, **kw):  # noqa: ANN003, ANN201
    return app.open("/admin/api" + path, method=method, headers={**AUTH, **kw.pop("headers", {})}, **kw)


def ids(app: FlaskClient) -> dict[str, str]:
    """Secret → key id, from the listing's hints (first 4 + … + last 3)."""
    by_hint = {k["hint"]: k["id"] for k in api(app, "GET", "/keys").json["keys"]}
    return {s: by_hint[f"{s[:4]}…{s[-3:]}"] for s in (K1, K2, K3)}


def assert_error(r, status: int, *words: str) -> dict:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json["error"]
    assert {"message", "type", "code"} <= set(err)
    for word in words:
        assert word in err["message"], err
    return err


def test_auth_failures_are_401_json(app):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = app.get("/admin/api/keys", headers=headers)
        assert_error(r, 401, "admin token")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in r.text
    assert_error(app.post("/admin/api/keys/k_0000000000/disable"), 401)
    assert app.get("/admin/api/keys", headers=AUTH).status_code == 200


def test_admin_disabled_without_token_is_403(make_app):
    app = make_app(admin_config())
    err = assert_error(app.get("/admin/api/keys", headers=AUTH), 403, "admin_token")
    assert err["code"] == "admin_disabled"
    assert app.get("/admin").status_code == 200  # the page itself is public


def test_list_keys_contract_with_masked_hints(app):
    r = api(app, "GET", "/keys")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    keys = r.json["keys"]
    assert len(keys) == 3
    for key in keys:
        assert {"id", "provider", "label", "enabled", "status", "weight", "health", "circuit", "cooldowns",
                "hint", "requests", "errors", "last_error"} <= set(key)
        assert key["provider"] == "gem" and key["enabled"] is True and key["status"] == "ok"
        assert key["circuit"] == "closed" and key["cooldowns"] == {}
    assert sorted(k["hint"] for k in keys) == sorted(f"{s[:4]}…{s[-3:]}" for s in (K1, K2, K3))
    by_id = {k["id"]: k for k in keys}
    assert by_id[ids(app)[K2]]["label"] == "team-b" and by_id[ids(app)[K2]]["weight"] == 2
    for secret in (K1, K2, K3, TOKEN):
        assert secret not in r.text
    one = api(app, "GET", f"/keys/{keys[0]['id']}")
    assert one.json["key"]["id"] == keys[0]["id"]


def test_unknown_key_is_404_for_every_action(app):
    for method, path, body in (("GET", "", None), ("POST", "/disable", {"reason": "x"}),
                               ("POST", "/enable", None), ("POST", "/reset", None),
                               ("POST", "/revalidate", None), ("PATCH", "", {"weight": 2})):
        err = assert_error(api(app, method, "/keys/k_0000000000" + path, json=body), 404, "k_0000000000")
        assert err["code"] == "key_not_found"


def test_disable_rejects_bad_bodies(app):
    k1 = ids(app)[K1]
    assert_error(api(app, "POST", f"/keys/{k1}/disable", data="{nope",
                     headers={"Content-Type": "application/json"}), 400, "not valid JSON")
    assert_error(api(app, "POST", f"/keys/{k1}/disable", json={"reason": 5}), 400, "reason")
    assert_error(api(app, "POST", f"/keys/{k1}/disable", json=["x"]), 400, "JSON object")
    assert api(app, "GET", f"/keys/{k1}").json["key"]["enabled"] is True  # nothing changed


def test_patch_weight_validation(app):
    k1 = ids(app)[K1]
    for bad in ({"weight": -1}, {"weight": 0}, {"weight": "heavy"}, {"weight": True}, {"weight": 1e9}, {},
                {"weight": 2, "colour": "red"}, {"weight": 2, "label": 7}):
        err = assert_error(api(app, "PATCH", f"/keys/{k1}", json=bad), 400)
        assert "weight" in err["message"] or "label" in err["message"]
    assert_error(api(app, "PATCH", f"/keys/{k1}", data="[", headers={"Content-Type": "application/json"}),
                 400, "not valid JSON")
    assert api(app, "GET", f"/keys/{k1}").json["key"]["weight"] == 1.0  # nothing changed


def test_audit_limit_validation(app):
    assert_error(api(app, "GET", "/audit", query_string={"limit": "0"}), 400, "limit")
    assert_error(api(app, "GET", "/audit", query_string={"limit": "abc"}), 400, "limit")
    assert len(api(app, "GET", "/audit", query_string={"limit": "2"}).json["audit"]) <= 2


def test_keys_carry_one_state_and_the_summary_and_history_refuses_bad_parameters(app):
    r = api(app, "GET", "/keys")
    body = r.json
    assert {k["state"] for k in body["keys"]} == {"usable"}
    for key in body["keys"]:
        assert {"state_reason", "state_until", "state_models", "disabled_by", "disabled_at", "last_error_at",
                "cooldowns_until", "circuit_until"} <= set(key)
    kid = body["keys"][0]["id"]
    assert api(app, "POST", f"/keys/{kid}/disable", json={"reason": "why"}).status_code == 200
    key = api(app, "GET", f"/keys/{kid}").json["key"]
    assert (key["state"], key["state_reason"], key["disabled_by"]) == ("disabled", "why", "admin@127.0.0.1")
    assert body["summary"] and all({"provider", "model", "usable", "keys", "soonest_recovery_s"} <= set(s)
                                   for s in body["summary"])
    h = api(app, "GET", f"/keys/{kid}/history?window=2h&step=10m").json
    assert len(h["points"]) == 12 and h["totals"]["requests"] == 0 and h["resolution_s"] == 60
    for query, param in (("window=0h", "window"), ("step=30s", "step"), ("window=31d&step=1h", "window"),
                         ("by=client", "by"), ("model=", "model")):
        r = api(app, "GET", "/history?" + query)
        assert r.status_code == 400 and r.json["error"]["param"] == param, (query, r.json)
