"""Issue 18, pure parts: Responses ⇄ chat translation and its stream events, Gemini ⇄ chat translation,
the Gemini error envelope, the stored-responses SQL (TTL, per client; on both store backends), and the
Gemini adapter's native calls refusing hostile model names before any request."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from proxy.api import gemini_shape as gs
from proxy.api import responses_shape as rs
from proxy.errors import CLIENT, BadRequest, GatewayError, NotFound, UpstreamError
from proxy.providers.gemini import GeminiAdapter
from tests.unit.test_upstream_paths import HOSTILE, Recorder

# ---------------------------------------------------------------------------------------- Responses


def test_input_items_become_chat_messages():
    body = {"model": "m", "instructions": "Be terse.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "21C"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "3C"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ], "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "w"}, "max_output_tokens": 9, "temperature": 0.2,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}
    rs.validate(body)
    req, turn = rs.to_chat_request(body, history=[{"role": "user", "content": "earlier"}])
    assert req["messages"][0] == {"role": "system", "content": "Be terse."}
    assert req["messages"][1] == {"role": "user", "content": "earlier"}
    assert turn[0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert turn[1]["role"] == "assistant" and turn[1]["content"] == "Let me look."
    assert [c["id"] for c in turn[1]["tool_calls"]] == ["c1", "c2"]  # both calls join the assistant turn
    assert turn[2:] == [{"role": "tool", "tool_call_id": "c1", "content": "21C"},
                        {"role": "tool", "tool_call_id": "c2", "content": "3C"}]
    assert len(turn) == 4  # the reasoning item is dropped
    assert req["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert req["max_tokens"] == 9 and req["temperature"] == 0.2
    assert req["response_format"] == {"type": "json_schema", "json_schema": {"name": "x",
                                                                             "schema": {"type": "object"}}}


@pytest.mark.parametrize("body, param", [
    ({"input": "x"}, "model"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
])
def test_validate_names_the_field(body, param):
    with pytest.raises(BadRequest) as exc:
        rs.validate(body)
    assert exc.value.param == param


def completion(content=None, calls=(), finish="stop", usage=None):
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                             for cid, n, a in calls]
    return {"choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def test_response_object_from_a_completion():
    body = {"model": "m", "input": "x", "max_output_tokens": 5}
    resp = rs.complete("resp_1", body, completion("hi", [("c1", "w", "{}")]))
    assert [i["type"] for i in resp["output"]] == ["message", "function_call"]
    assert resp["output"][1]["call_id"] == "c1"
    assert resp["usage"]["input_tokens"] == 3 and resp["usage"]["total_tokens"] == 5
    assert resp["status"] == "completed" and resp["incomplete_details"] is None
    cut = rs.complete("resp_2", body, completion("h", finish="length"))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert rs.assistant_turn(resp["output"]) == {"role": "assistant", "content": "hi", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}


def chunk(delta=None, finish=None, usage=None):
    out: dict = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        out = {"choices": [], "usage": usage}
    return out


def test_stream_events_in_order_with_sequence_numbers():
    ev = rs.ResponseEvents("resp_1", {"model": "m", "input": "x"})
    events = []
    for c in [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
              chunk({"content": "lo"}),
              chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
              chunk(finish="tool_calls"), chunk(usage={"prompt_tokens": 4, "completion_tokens": 6})]:
        events += ev.feed(c)
    events += ev.finish()
    assert [k for k, _ in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    done = events[-1][1]["response"]
    assert done["output"][0]["content"][0]["text"] == "Hello"
    assert done["output"][1]["arguments"] == "{\"a\":1}" and done["output"][1]["call_id"] == "c1"
    assert done["usage"]["output_tokens"] == 6
    assert events[12][1]["arguments"] == "{\"a\":1}"


def test_stream_failure_after_the_first_event_is_response_failed():
    ev = rs.ResponseEvents("resp_1", {"model": "m", "input": "x"})
    ev.feed(chunk({"content": "par"}))
    kind, data = ev.fail(UpstreamError("upstream went away", outcome="transient"))[-1]
    assert kind == "response.failed" and data["response"]["status"] == "failed"
    assert data["response"]["error"]["message"] == "upstream went away"


def test_json_schema_as_a_forced_tool_and_back():
    req = {"model": "m", "messages": [], "response_format": {"type": "json_schema", "json_schema": {
        "name": "echo", "schema": {"type": "object"}}}}
    forced = rs.schema_as_tool(req)
    assert forced is not None and "response_format" not in forced
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "echo"}}
    assert rs.schema_as_tool({**req, "tools": [{"type": "function"}]}) is None  # the client's own tools win
    back = rs.tool_as_text(completion("I'll use echo.", [("c", "echo", "{\"a\":1}")], finish="tool_calls"))
    assert back["choices"][0]["message"]["content"] == "{\"a\":1}"
    assert back["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in back["choices"][0]["message"]

    def stream() -> Iterator[dict]:
        yield chunk({"content": "I'll use echo."})
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]})
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, finish="tool_calls")

    out = list(rs.tool_chunks_as_text(stream()))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in out) == "{\"a\":1}"
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------------------------------- Gemini


def test_generate_body_becomes_a_chat_request():
    body = {
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}, {"inlineData": {"mimeType": "image/png",
                                                                           "data": "AAAA"}}]},
            {"role": "model", "parts": [{"text": "", "thought": True},
                                        {"functionCall": {"name": "w", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 21}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "w", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING", "nullable": True}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}},
        "generationConfig": {"temperature": 0.1, "maxOutputTokens": 7, "stopSequences": ["END"], "topK": 3,
                             "responseMimeType": "application/json"},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    gs.validate_generate(body)
    req = gs.to_chat_request(body, "m", stream=True)
    system, user, assistant, tool = req["messages"]
    assert system == {"role": "system", "content": "Be terse."}
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = assistant["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": "{\"t\": 21}"}
    assert req["tools"][0]["function"]["parameters"] == {
        "type": "object", "properties": {"city": {"type": ["string", "null"]}}}
    assert req["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert (req["temperature"], req["max_tokens"], req["stop"]) == (0.1, 7, ["END"])
    assert req["response_format"] == {"type": "json_object"}
    assert req["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("part, what", [
    ({"fileData": {"fileUri": "gs://x", "mimeType": "application/pdf"}}, "fileData"),
    ({"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}}, "audio/wav"),
    ({"executableCode": {"code": "print(1)"}}, "executableCode"),
])
def test_untranslatable_parts_are_named(part, what):
    with pytest.raises(BadRequest) as exc:
        gs.to_chat_request({"contents": [{"role": "user", "parts": [part]}]}, "m")
    assert what in exc.value.message and exc.value.code == "untranslatable"


def test_google_search_tool_is_untranslatable():
    with pytest.raises(BadRequest, match="googleSearch"):
        gs.to_chat_request({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}, "m")


def test_completion_and_chunks_become_gemini_answers():
    answer = gs.from_completion(completion("hi", [("c1", "w", "{\"a\": 1}")], finish="tool_calls"), "alias")
    parts = answer["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "hi"}, {"functionCall": {"id": "c1", "name": "w", "args": {"a": 1}}}]
    assert answer["candidates"][0]["finishReason"] == "STOP" and answer["modelVersion"] == "alias"
    assert answer["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    enc = gs.GeminiEvents("alias")
    events = enc.feed(chunk({"content": "he"})) + enc.feed(chunk({"content": "y"}))
    events += enc.feed(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "w",
                                                                                  "arguments": "{\"a\""}}]}))
    events += enc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":2}"}}]},
                             finish="length"))
    events += enc.feed(chunk(usage={"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}))
    events += enc.finish()
    assert [e["candidates"][0]["content"]["parts"] for e in events] == [
        [{"text": "he"}], [{"text": "y"}], [{"functionCall": {"id": "c", "name": "w", "args": {"a": 2}}}]]
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert events[-1]["usageMetadata"]["totalTokenCount"] == 5


def test_embeddings_both_ways():
    batch = {"requests": [{"model": "models/alias", "content": {"parts": [{"text": "a"}]},
                           "outputDimensionality": 4}, {"content": {"parts": [{"text": "b"}]},
                                                        "outputDimensionality": 4}]}
    gs.validate_batch(batch)
    assert gs.to_embeddings_request("batchEmbedContents", batch, "alias") == {
        "model": "alias", "input": ["a", "b"], "encoding_format": "float", "dimensions": 4}
    result = {"data": [{"embedding": [0.5, 1.0]}, {"embedding": "AAAAPwAAgD8="}]}  # base64 float32 too
    assert gs.from_embeddings("batchEmbedContents", result) == {
        "embeddings": [{"values": [0.5, 1.0]}, {"values": [0.5, 1.0]}]}
    assert gs.retarget("batchEmbedContents", batch, "up-1")["requests"][1]["model"] == "models/up-1"


def test_error_envelope_and_method_split():
    body = gs.error_body(GatewayError("slow down", status=429))
    assert body == {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    assert gs.error_body(GatewayError("x", status=400))["error"]["status"] == "INVALID_ARGUMENT"
    assert gs.split_target("openrouter/llama-3:free:generateContent") == ("openrouter/llama-3:free",
                                                                          "generateContent")
    for bad in ("flash", "flash:", ":generateContent", "flash:deleteModel"):
        with pytest.raises(NotFound):
            gs.split_target(bad)


# ---------------------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("model", HOSTILE)
def test_native_calls_refuse_a_hostile_model_before_any_request(model):
    rec = Recorder("/v1beta")
    try:
        adapter, call = GeminiAdapter(), rec.call(model)
        body = {"contents": [{"parts": [{"text": "x"}]}]}
        for fn in (lambda: adapter.native(call, "generateContent", body),
                   lambda: next(iter(adapter.native_stream(call, body)))):
            with pytest.raises(UpstreamError) as exc:
                fn()
            assert exc.value.outcome == CLIENT and exc.value.status == 400
        assert rec.targets == []
    finally:
        rec.close()


def test_native_method_is_from_a_fixed_set():
    rec = Recorder("/v1beta")
    try:
        with pytest.raises(UpstreamError) as exc:
            GeminiAdapter().native(rec.call("gemini-2.5-flash"), "../../admin", {})
        assert exc.value.outcome == CLIENT and exc.value.status == 400 and rec.targets == []
    finally:
        rec.close()


# ---------------------------------------------------------------------------------------- store


def test_stored_responses_per_client_with_expiry(any_backend):
    store = any_backend.open(lock_wait_s=0.3)
    with store.transaction() as tx:
        tx.save_response("resp_a", "cl_1", 100.0, 200.0, '{"id": "resp_a"}', "[]")
        tx.save_response("resp_old", "cl_1", 10.0, 50.0, "{}", "[]")
    with store.snapshot() as tx:
        assert tx.load_response("resp_a", "cl_1", 150.0) == ('{"id": "resp_a"}', "[]")
        assert tx.load_response("resp_a", "cl_2", 150.0) is None  # another client's
        assert tx.load_response("resp_a", "cl_1", 200.0) is None  # expired
    with store.transaction() as tx:
        assert tx.purge_responses(150.0) == 1  # resp_old only
        assert tx.delete_response("resp_a", "cl_2", 150.0) is False
        assert tx.delete_response("resp_a", "cl_1", 150.0) is True
        assert tx.delete_response("resp_a", "cl_1", 150.0) is False
