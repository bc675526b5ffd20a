"""proxy.providers.toolkit: the pieces every adapter shares."""

from __future__ import annotations

import base64
import struct

import pytest

from proxy.errors import AUTH, CLIENT, QUOTA, TRANSIENT
from proxy.providers import toolkit as tk


def test_header_is_case_insensitive():
    assert tk.header({"Retry-After": "3"}, "retry-after") == "3"
    assert tk.header({}, "retry-after") is None and tk.header(None, "x") is None


def test_ids():
    assert tk.completion_id().startswith("chatcmpl-") and len(tk.completion_id()) == 9 + 24
    assert tk.tool_call_id().startswith("call_") and tk.tool_call_id() != tk.tool_call_id()


def test_text_of():
    assert tk.text_of(None) == "" and tk.text_of("hi") == "hi"
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, "b",
             {"type": "input_text", "text": "c"}]  # fmt: skip
    assert tk.text_of(parts) == "abc" and tk.text_of(parts, sep=" ") == "a b c"
    with pytest.raises(ValueError):
        tk.text_of(42)


def test_json_body_and_embedded_status():
    assert tk.json_body(b'{"a": 1}') == {"a": 1} and tk.json_body("nope") is None
    assert tk.json_body({"a": 1}) == {"a": 1}
    assert [tk.embedded_status(c) for c in (429, "503", 200, "x", None, True, 600)] == [
        429, 503, 502, 502, 502, 502, 502]  # fmt: skip


def test_encode_floats():
    assert tk.encode_floats([0.5], "float") == [0.5] and tk.encode_floats([0.5], None) == [0.5]
    raw = base64.b64decode(tk.encode_floats([0.5, -1.0], "base64"))
    assert struct.unpack("<2f", raw) == (0.5, -1.0)


@pytest.mark.parametrize(
    ("status", "outcome", "client_status"),
    [(401, AUTH, 401), (403, AUTH, 403), (429, QUOTA, 429), (400, CLIENT, 400), (404, CLIENT, 404),
     (422, CLIENT, 422), (408, TRANSIENT, 504), (500, TRANSIENT, 502), (503, TRANSIENT, 503),
     (504, TRANSIENT, 502), (529, TRANSIENT, 502), (302, TRANSIENT, 502)],
)  # fmt: skip
def test_status_ladder(status, outcome, client_status):
    err = tk.status_error(status, "m", code="c")
    assert (err.outcome, err.status, err.upstream_status, err.code) == (outcome, client_status, status, "c")


def test_status_ladder_dialect_statuses_and_upstream_status():
    assert tk.status_error(529, "m", server_statuses={529: 503}).status == 503
    err = tk.status_error(401, "m", upstream_status=400)
    assert (err.outcome, err.status, err.upstream_status) == (AUTH, 401, 400)


def test_response_objects_carry_what_the_schema_requires():
    calls = [{"id": "call_1"}]
    message = tk.assistant_message(None, calls)
    assert message == {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}
    assert "tool_calls" not in tk.assistant_message("hi")
    assert tk.completion_choice(0, message, "tool_calls")["logprobs"] is None
    stream = tk.StreamChunks("m", "chatcmpl-x")
    first, last = stream.make_chunk({"content": "a"}, index=1), stream.make_usage_chunk({"total_tokens": 1})
    choice = {"index": 1, "delta": {"content": "a"}, "logprobs": None, "finish_reason": None}
    assert first["choices"] == [choice]
    assert (first["id"], first["created"]) == (last["id"], last["created"]) and last["choices"] == []


def test_tool_arguments():
    assert tk.tool_arguments({"function": {"arguments": '{"a": 1}'}}) == {"a": 1}
    assert tk.tool_arguments({"function": {}}) == {} and tk.tool_arguments({}) == {}
    assert tk.tool_arguments({"function": {"arguments": {"a": 1}}}) == {"a": 1}
    with pytest.raises(ValueError):
        tk.tool_arguments({"function": {"arguments": "{nope"}})
