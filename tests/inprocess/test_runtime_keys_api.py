"""Runtime keys through the admin API in process: contracts, validation, audit, import counting, PATCH
label, DELETE of a config key. Workers, restarts and the database bytes: tests/integration/
test_runtime_keys.py (real gunicorn)."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from flask.testing import FlaskClient

from tests.inprocess.test_admin_api import AUTH, K1, TOKEN, admin_config, assert_error

SECRET_KEY = Fernet.generate_key().decode()
NEW = "AIzaRUNTIME-key-0000000000001"


def api(app: FlaskClient, method: str, path: str, **kw):  # noqa: ANN003, ANN201
    return app.open("/admin/api" + path, method=method, headers=AUTH, **kw)


@pytest.fixture
def app(make_app) -> FlaskClient:
    return make_app(admin_config(admin_token=TOKEN, secret_key=SECRET_KEY))


def keys_text(n: int, prefix: str = "AIzaIMPORT-") -> list[str]:
    return [f"{prefix}{i:020d}" for i in range(n)]


def test_add_answers_201_with_id_and_hint_never_the_secret(app):
    r = api(app, "POST", "/keys", json={"provider": "gem", "key": NEW, "label": "ops", "weight": 3,
                                        "project": "proj-1"})
    assert r.status_code == 201, r.text
    assert NEW not in r.text
    body = r.json
    assert body["id"].startswith("k_") and body["hint"] == "AIza…001"
    assert {k: body["key"][k] for k in ("id", "label", "weight", "source", "project", "hint")} == {
        "id": body["id"], "label": "ops", "weight": 3.0, "source": "runtime", "project": "proj-1",
        "hint": "AIza…001"}
    listed = {k["id"]: k for k in api(app, "GET", "/keys").json["keys"]}
    assert listed[body["id"]]["source"] == "runtime" and listed[body["id"]]["usable"] is True
    assert {k["source"] for i, k in listed.items() if i != body["id"]} == {"config"}
    audit = api(app, "GET", "/audit?limit=1").json["audit"][0]
    assert (audit["action"], audit["key_id"], audit["after"]["source"]) == ("add", body["id"], "runtime")
    assert NEW not in str(audit)
    # the same secret again, or one the config has: 409 key_exists
    assert_error(api(app, "POST", "/keys", json={"provider": "gem", "key": NEW}), 409, "already in use")
    assert_error(api(app, "POST", "/keys", json={"provider": "gem", "key": K1}), 409, "the config")


@pytest.mark.parametrize("body, param", [
    ({"key": NEW}, "provider"),
    ({"provider": "nope", "key": NEW}, "provider"),
    ({"provider": "gem"}, "key"),
    ({"provider": "gem", "key": "short"}, "key"),
    ({"provider": "gem", "key": "AIza has-a-space-inside-it"}, "key"),
    ({"provider": "gem", "key": NEW, "weight": 0}, "weight"),
    ({"provider": "gem", "key": NEW, "weight": "2"}, "weight"),
    ({"provider": "gem", "key": NEW, "label": 5}, "label"),
    ({"provider": "gem", "key": NEW, "project": "a b"}, "project"),
    ({"provider": "gem", "key": NEW, "secret": "x"}, "secret"),
])
def test_add_refuses_bad_input_naming_the_field(app, body, param):
    r = api(app, "POST", "/keys", json=body)
    err = assert_error(r, 400)
    assert err["param"] == param
    assert NEW not in r.text


def test_add_without_secret_key_is_refused_saying_how_to_set_one(make_app):
    app = make_app(admin_config(admin_token=TOKEN))
    for path, body in (("/keys", {"provider": "gem", "key": NEW}),
                       ("/keys/import", {"provider": "gem", "keys": NEW})):
        err = assert_error(api(app, "POST", path, json=body), 409, "KEYRELAY_SECRET_KEY",
                           "server.secret_key")
        assert err["code"] == "secret_key_not_set"
    assert len(api(app, "GET", "/keys").json["keys"]) == 3


def test_import_counts_added_duplicates_and_invalid(app):
    keys = keys_text(95)
    lines = keys + keys[:2] + [K1] + ["AIza bad key with spaces 00000", "AIzaCTRL\x07char-000000000"]
    r = api(app, "POST", "/keys/import", json={"provider": "gem", "keys": "\n".join(lines)})
    assert r.status_code == 200, r.text
    assert {k: r.json[k] for k in ("added", "duplicates", "invalid")} == {"added": 95, "duplicates": 3,
                                                                           "invalid": 2}
    assert [x["line"] for x in r.json["invalid_lines"]] == [99, 100]
    assert "AIza bad" not in r.text
    assert len(api(app, "GET", "/keys").json["keys"]) == 98
    # comma-separated, blank items and comment lines skipped; all known now → all duplicates
    again = "# a comment, with a comma\n" + ", ".join(keys[:5]) + ",,\n\n"
    r = api(app, "POST", "/keys/import", json={"provider": "gem", "keys": again})
    assert {k: r.json[k] for k in ("added", "duplicates", "invalid")} == {"added": 0, "duplicates": 5,
                                                                           "invalid": 0}
    assert_error(api(app, "POST", "/keys/import", json={"provider": "gem"}), 400, "keys")
    assert_error(api(app, "POST", "/keys/import", json={"provider": "gem", "keys": ["x"]}), 400, "keys")


def test_delete_runtime_key_then_config_key_409(app):
    kid = api(app, "POST", "/keys", json={"provider": "gem", "key": NEW}).json["id"]
    r = api(app, "DELETE", f"/keys/{kid}")
    assert r.status_code == 200 and r.json == {"id": kid, "removed": True}
    assert kid not in [k["id"] for k in api(app, "GET", "/keys").json["keys"]]
    assert api(app, "GET", "/audit?limit=1").json["audit"][0]["action"] == "remove"
    assert_error(api(app, "DELETE", f"/keys/{kid}"), 409, "nothing to remove")
    assert_error(api(app, "DELETE", "/keys/k_0000000000"), 404)
    config_kid = next(k["id"] for k in api(app, "GET", "/keys").json["keys"] if k["source"] == "config")
    err = assert_error(api(app, "DELETE", f"/keys/{config_kid}"), 409, "config file", "disable")
    assert err["code"] == "config_key"
    # re-adding the removed key restores its row with the weight given now (no old override)
    api(app, "PATCH", f"/keys/{config_kid}", json={"weight": 5})
    again = api(app, "POST", "/keys", json={"provider": "gem", "key": NEW, "weight": 2})
    assert again.status_code == 201 and again.json["id"] == kid and again.json["key"]["weight"] == 2.0
    assert api(app, "GET", "/audit?limit=1").json["audit"][0]["after"]["restored"] is True


def test_patch_takes_label_and_weight(app):
    kid = api(app, "POST", "/keys", json={"provider": "gem", "key": NEW}).json["id"]
    r = api(app, "PATCH", f"/keys/{kid}", json={"label": "night shift", "weight": 4})
    assert r.status_code == 200, r.text
    assert (r.json["key"]["label"], r.json["key"]["weight"]) == ("night shift", 4.0)
    actions = [e["action"] for e in api(app, "GET", "/audit?limit=2").json["audit"]]
    assert actions == ["set_label", "set_weight"]
    assert_error(api(app, "PATCH", f"/keys/{kid}", json={"label": "x" * 101}), 400, "label")
    assert_error(api(app, "PATCH", f"/keys/{kid}", json={"hint": "x"}), 400, "hint")
    assert api(app, "GET", f"/keys/{kid}").json["key"]["label"] == "night shift"


def test_test_of_unknown_key_is_404(app):
    assert_error(api(app, "POST", "/keys/k_0000000000/test"), 404)
