"""The catalog's HTTP semantics in process: the pre-check 400 in each caller's envelope, 503 no_free_model,
/v1/models/{id} fields, the admin catalog API's parameters and errors."""
from __future__ import annotations

import pytest

from proxy.catalog import refresh
from tests.conftest import ADMIN_TOKEN
from tests.mock_catalog import fixture

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(make_app):
    c = make_app({
        "server": {"admin_token": ADMIN_TOKEN},
        "providers": [{"name": "or", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": ["sk-x"],
                       "catalog": "openrouter"}],
        "models": [{"name": "phi", "targets": [{"provider": "or", "model": "microsoft/phi-4"}]},
                   {"name": "huge-free", "free_pool": {"provider": "or", "min_context": 5_000_000}}],
        "catalog": {"sources": []}})
    store = c.application.extensions["keyrelay"].pool.store
    refresh.import_document(store, fixture("openrouter"), "file:x", 1.0)
    return c


LONG = "word " * 16000


def test_nothing_fits_is_a_400_in_the_callers_envelope(client):
    r = client.post("/v1/chat/completions",
                    json={"model": "phi", "messages": [{"role": "user", "content": LONG}]})
    assert r.status_code == 400
    err = r.json["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert err["type"] == "invalid_request_error" and "or/microsoft/phi-4" in err["message"]
    r = client.post("/v1/messages", json={"model": "phi", "max_tokens": 10,
                                          "messages": [{"role": "user", "content": LONG}]})
    assert r.status_code == 400 and r.json["type"] == "error"
    assert r.json["error"]["type"] == "invalid_request_error"
    assert "context window" in r.json["error"]["message"]


def test_a_free_pool_with_no_free_model_is_503(client):
    r = client.post("/v1/chat/completions", json={"model": "huge-free", "messages": [{"role": "user",
                                                                                      "content": "hi"}]})
    assert r.status_code == 503 and r.json["error"]["code"] == "no_free_model"


def test_v1_models_by_id_carries_the_catalog_fields(client):
    phi = client.get("/v1/models/phi").json
    assert phi["context_length"] == 16384 and phi["architecture"]["input_modalities"] == ["text"]
    assert client.get("/v1/models/huge-free").json == {"id": "huge-free", "object": "model", "created": 0,
                                                       "owned_by": "keyrelay"}


def test_admin_catalog_parameters_and_errors(client):
    r = client.get("/admin/api/catalog?provider=openrouter&free=true&q=LLAMA", headers=ADMIN)
    assert [e["model"] for e in r.json["entries"]] == ["meta-llama/llama-3.3-70b-instruct:free"]
    assert r.json["sources"]["openrouter"]["entries"] == 18
    assert client.get("/admin/api/catalog?free=false&limit=3", headers=ADMIN).json["count"] == 3
    for bad in ("free=yes", "limit=0", "limit=x"):
        r = client.get(f"/admin/api/catalog?{bad}", headers=ADMIN)
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_parameter"
    r = client.post("/admin/api/catalog/refresh", headers=ADMIN)
    assert r.status_code == 400 and r.json["error"]["code"] == "no_catalog_source"
    assert client.get("/admin/api/catalog").status_code == 401
