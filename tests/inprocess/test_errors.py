"""Routing, request validation and error envelopes, in process (create_app + Flask's test client): the
OpenAI envelope everywhere, the Anthropic one under /v1/messages; no HTML page, no traceback."""
from __future__ import annotations

import json

import anthropic
import httpx2
import openai
import pytest
from flask.testing import FlaskClient

from tests.harness import mock_config

DEAD_UPSTREAM = "http://127.0.0.1:9"  # nothing listens: a request that got past validation would fail


@pytest.fixture
def app(make_app) -> FlaskClient:
    config = mock_config(max_body_bytes=4096)
    config["providers"].append({"name": "gemini", "type": "gemini", "base_url": DEAD_UPSTREAM + "/v1beta",
                                "keys": ["gem-inprocess-key"]})
    config["models"].append({"name": "gem", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]})
    return make_app(config)


def http_client(app: FlaskClient) -> httpx2.Client:
    """An SDK's HTTP client that calls the app in process."""
    return httpx2.Client(transport=httpx2.WSGITransport(app=app.application), base_url="http://localhost")


def post(app: FlaskClient, data: str | bytes, path: str = "/v1/chat/completions"):  # noqa: ANN201
    return app.post(path, data=data, headers={"Content-Type": "application/json"})


def assert_openai_error(r, status: int, *words: str) -> None:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json["error"]
    assert set(err) >= {"message", "type", "code"}
    for word in words:
        assert word in err["message"]
    assert "Traceback" not in r.text and "<html" not in r.text.lower()


# ------------------------------------------------------------------------------------------- OpenAI


def test_health_ready_models_and_request_id(app):
    assert app.get("/healthz").json == {"status": "ok"}
    ready = app.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"
    with openai.OpenAI(base_url="http://localhost/v1", api_key="unused", max_retries=0,
                       http_client=http_client(app)) as sdk:
        assert "mock-chat" in [m.id for m in sdk.models.list().data]
    r = app.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    assert app.get("/v1/models").headers["X-Request-ID"]


def test_malformed_json_is_400(app):
    assert_openai_error(post(app, b'{"model": "mock-chat", "messages": ['), 400, "not valid JSON")


def test_missing_model_and_messages_are_400(app):
    assert_openai_error(post(app, json.dumps({"messages": [{"role": "user", "content": "x"}]})), 400, "model")
    assert_openai_error(post(app, json.dumps({"model": "mock-chat"})), 400, "messages")
    assert_openai_error(post(app, json.dumps({"model": "mock-chat", "messages": []})), 400, "messages")
    assert_openai_error(post(app, json.dumps(["not", "an", "object"])), 400, "JSON object")


def test_unknown_model_is_404(app):
    r = post(app, json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}))
    assert_openai_error(r, 404, "no-such-model")
    with openai.OpenAI(base_url="http://localhost/v1", api_key="unused", max_retries=0,
                       http_client=http_client(app)) as sdk, pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_oversized_body_is_413(app):
    big = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "x" * 10000}]})
    assert_openai_error(post(app, big), 413, "limit")


def test_wrong_method_and_unknown_path(app):
    r = app.get("/v1/chat/completions")
    assert_openai_error(r, 405, "GET")
    assert "POST" in r.headers["Allow"]
    assert_openai_error(app.get("/v1/nothing-here"), 404, "/v1/nothing-here")


# ---------------------------------------------------------------------------------------- Anthropic


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_malformed_json_in_anthropic_envelope(app):
    resp = post(app, b"{not json", "/v1/messages")
    assert resp.status_code == 400
    body = resp.json
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "JSON" in body["error"]["message"]


@pytest.mark.parametrize("payload,mentions", [
    ({"model": "gem", "messages": [user("hi")]}, "max_tokens"),
    ({"max_tokens": 10, "messages": [user("hi")]}, "model"),
    ({"model": "gem", "max_tokens": 10, "messages": []}, "messages"),
    ({"model": "gem", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "role"),
])
def test_invalid_requests_in_anthropic_envelope(app, payload, mentions):
    resp = app.post("/v1/messages", json=payload)
    assert resp.status_code == 400  # rejected at the door: the upstream behind "gem" is unreachable
    body = resp.json
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert mentions in body["error"]["message"]


def test_unknown_model_is_not_found_error(app):
    with anthropic.Anthropic(base_url="http://localhost", api_key="client-key", max_retries=0,
                             http_client=http_client(app)) as sdk, \
            pytest.raises(anthropic.NotFoundError) as info:
        sdk.messages.create(model="no-such-model", max_tokens=16, messages=[user("hi")])
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"


def test_unknown_path_under_messages_in_anthropic_envelope(app):
    resp = app.post("/v1/messages/nope", json={})
    assert resp.status_code == 404 and resp.json["type"] == "error"
