"""Issue 18, HTTP semantics in-process (the built-in mock provider): a busy store never costs a paid answer
and is a 503 in OpenAI's envelope where nothing was answered yet; the Gemini-native endpoint's routing."""
from __future__ import annotations

import pytest

from proxy.api import responses
from proxy.store.base import StoreUnavailable


def busy(*_args: object, **_kwargs: object) -> None:
    raise StoreUnavailable("database is locked")


def test_a_store_that_fails_after_the_answer_still_answers(app_client, monkeypatch):
    monkeypatch.setattr(responses, "_save", busy)
    r = app_client.post("/v1/responses", json={"model": "mock-chat", "input": "hello"})
    assert r.status_code == 200 and r.json["object"] == "response"
    r = app_client.post("/v1/responses", json={"model": "mock-chat", "input": "hello", "stream": True})
    assert r.status_code == 200 and b"response.completed" in r.get_data()


@pytest.mark.parametrize("method, path", [("GET", "/v1/responses/resp_x"), ("DELETE", "/v1/responses/resp_x"),
                                          ("POST", "/v1/responses")])
def test_a_busy_store_before_any_answer_is_a_503(app_client, monkeypatch, method, path):
    monkeypatch.setattr(responses, "_load", busy)
    monkeypatch.setattr(responses, "tx_responses", busy)
    body = {"model": "mock-chat", "input": "x", "previous_response_id": "resp_x"}
    body = body if method == "POST" else None
    r = app_client.open(path, method=method, json=body)
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable"


def test_gemini_native_through_the_builtin_mock(app_client):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    r = app_client.post("/v1beta/models/mock-chat:generateContent", json=body)
    assert r.status_code == 200 and r.json["candidates"][0]["content"]["parts"][0]["text"]
    r = app_client.post("/v1beta/models/mock-chat:streamGenerateContent?alt=sse", json=body)
    assert r.status_code == 200 and r.mimetype == "text/event-stream" and r.get_data().startswith(b"data: {")
    r = app_client.post("/v1beta/models/mock-chat:countTokens", json=body)
    assert r.status_code == 400 and r.json["error"]["status"] == "INVALID_ARGUMENT"
    r = app_client.get("/v1beta/nothing-here")
    assert r.status_code == 404 and r.json["error"]["status"] == "NOT_FOUND"
    r = app_client.put("/v1beta/models/mock-chat:generateContent", json=body)
    assert r.status_code == 405 and set(r.json["error"]) == {"code", "message", "status"}
