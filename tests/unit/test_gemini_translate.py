"""OpenAI <-> Gemini translation, pinned to recorded real Gemini payloads (tests/fixtures)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.errors import AUTH, CLIENT, QUOTA, TRANSIENT, BadRequest
from proxy.providers import gemini_translate as gt
from proxy.providers.http import iter_sse_data

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_bytes())


def sse_events(raw: bytes) -> list[dict]:
    return [json.loads(data) for _event, data in iter_sse_data(iter(raw.splitlines()))]


def load_sse(name: str) -> list[dict]:
    return sse_events((FIXTURES / name).read_bytes())


def run_stream(events: list[dict], model: str = "my-model") -> tuple[list[dict], gt.StreamTranslator]:
    tr = gt.StreamTranslator(model)
    chunks = [c for ev in events for c in tr.feed(ev)]
    chunks += tr.finish()
    return chunks, tr


def content_of(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def finish_reasons(chunks: list[dict]) -> list[str]:
    return [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]


# ------------------------------------------------------------------------------------------- responses


def test_generate_text_fixture():
    out = gt.from_gemini_response(load_json("gemini-generate-text.json"), "fast")
    ChatCompletion.model_validate(out)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == "fast"
    (choice,) = out["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("Google's headquarters")
    assert "tool_calls" not in choice["message"]
    assert out["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 22, "total_tokens": 29,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip


def test_generate_tool_call_fixture_and_signature_round_trip():
    raw = load_json("gemini-generate-tool-call.json")
    signature = raw["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    out = gt.from_gemini_response(raw, "smart")
    msg = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["content"] is None
    (call,) = msg["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "weather", "arguments": json.dumps({"location": "San Francisco"})}
    assert out["usage"]["completion_tokens"] == 15 + 893
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 893
    assert out["usage"]["total_tokens"] == 937

    # The id survives the openai SDK's own models unchanged, and the signature decodes back from it.
    sdk_msg = ChatCompletion.model_validate(out).choices[0].message
    echoed = sdk_msg.model_dump(exclude_none=True)
    assert echoed["tool_calls"][0]["id"] == call["id"]

    follow_up = {
        "messages": [
            {"role": "user", "content": "Weather in SF?"},
            echoed,
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 20}'},
        ]
    }
    body = gt.to_gemini_request(follow_up)
    model_turn = body["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "weather", "args": {"location": "San Francisco"}},
            "thoughtSignature": signature,
        }
    ]
    assert body["contents"][2] == {
        "role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"temp": 20}}}]
    }  # fmt: skip


def test_tool_call_ids_are_fresh_and_plain():
    sig = "EskgCsYgAb4+9vtF7/499YQS=="
    a, b = gt.make_tool_call_id(sig), gt.make_tool_call_id(sig)
    assert a != b
    for cid in (a, b, gt.make_tool_call_id()):
        assert cid.startswith("call_")
        assert all(ch.isalnum() or ch in "_-" for ch in cid)
    assert gt.signature_from_tool_call_id(a) == sig
    assert gt.signature_from_tool_call_id(gt.make_tool_call_id()) is None
    assert gt.signature_from_tool_call_id("call_JMW1whyEaYG438VE1OIflxA2") is None  # an OpenAI id
    assert gt.signature_from_tool_call_id(None) is None


def test_tool_call_without_signature_sends_no_signature():
    body = gt.to_gemini_request({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "2025-01-01"},
    ]})  # fmt: skip
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "now", "args": {}}}]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "now", "response": {"result": "2025-01-01"}}}
    ]


def test_prompt_blocked_non_stream_is_a_normal_response():
    (event,) = load_sse("gemini-stream-prompt-blocked.sse")
    out = gt.from_gemini_response(event, "m")
    ChatCompletion.model_validate(out)
    assert out["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None,
         "finish_reason": "content_filter"}
    ]  # fmt: skip
    assert out["usage"]["total_tokens"] == 0


@pytest.mark.parametrize(
    ("reason", "has_calls", "expected"),
    [
        ("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"), ("BLOCKLIST", False, "content_filter"),
        ("SPII", False, "content_filter"), ("IMAGE_SAFETY", False, "content_filter"),
        ("OTHER", False, "stop"), ("SOMETHING_NEW", False, "stop"), (None, False, "stop"),
    ],
)  # fmt: skip
def test_finish_reason_mapping(reason, has_calls, expected):
    assert gt.map_finish_reason(reason, has_calls) == expected


def test_thought_parts_and_signature_only_text_are_not_answer_text():
    body = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "secret thinking", "thought": True},
        {"text": "Answer."},
        {"text": "", "thoughtSignature": "c2ln"},
    ]}, "finishReason": "STOP"}]}  # fmt: skip
    out = gt.from_gemini_response(body, "m")
    assert out["choices"][0]["message"]["content"] == "Answer."


def test_multiple_candidates_become_choices():
    body = {"candidates": [
        {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"},
    ]}  # fmt: skip
    out = gt.from_gemini_response(body, "m")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


# ------------------------------------------------------------------------------------------- streams


def test_stream_text_fixture_with_final_usage():
    chunks, tr = run_stream(load_sse("gemini-stream-text.sse"))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["model"] == "my-model" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert content_of(chunks) == "The capital of Wyoming is **Cheyenne**.\n"
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    usage = tr.usage_chunk()
    ChatCompletionChunk.model_validate(usage)
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip


def test_stream_ending_with_max_tokens_is_length():
    events = load_sse("gemini-stream-text.sse")
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    events[-1]["candidates"][0]["finishReason"] = "MAX_TOKENS"
    chunks, _ = run_stream(events)
    assert finish_reasons(chunks) == ["length"]


def test_stream_thinking_function_call_fixture():
    events = load_sse("gemini-stream-thinking-functioncall.sse")
    signature = events[-1]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    chunks, tr = run_stream(events)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    text = json.dumps(chunks)
    assert "Calculating" not in text and "Determining" not in text  # no thought text leaked
    assert content_of(chunks) == ""
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert len(calls) == 1
    call = calls[0]
    assert call["index"] == 0 and call["type"] == "function"
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert gt.signature_from_tool_call_id(call["id"]) == signature
    assert finish_reasons(chunks) == ["tool_calls"]
    assert tr.usage()["completion_tokens"] == 6 + 168
    assert tr.usage()["completion_tokens_details"]["reasoning_tokens"] == 168
    assert tr.usage()["total_tokens"] == 212


def test_stream_parallel_calls_get_increasing_indexes():
    event = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "b", "args": {}}},
    ]}, "finishReason": "STOP"}]}  # fmt: skip
    chunks, _ = run_stream([event])
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "a"), (1, "b")]
    assert calls[0]["id"] != calls[1]["id"]
    assert gt.signature_from_tool_call_id(calls[0]["id"]) == "c2ln"
    assert gt.signature_from_tool_call_id(calls[1]["id"]) is None


def test_stream_prompt_blocked_fixture():
    chunks, tr = run_stream(load_sse("gemini-stream-prompt-blocked.sse"))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert finish_reasons(chunks) == ["content_filter"]
    assert content_of(chunks) == ""
    assert tr.usage_chunk()["usage"]["total_tokens"] == 0


def test_stream_recitation_without_content_fixture():
    chunks, tr = run_stream(load_sse("gemini-stream-recitation-no-content.sse"))
    assert content_of(chunks) == "".join(f"text{i}" for i in range(1, 9))
    assert finish_reasons(chunks) == ["content_filter"]
    assert tr.usage()["prompt_tokens"] == 9
    assert tr.usage()["completion_tokens"] == 261
    assert tr.usage()["total_tokens"] == 270


def test_stream_without_finish_reason_is_closed_by_finish():
    events = load_sse("gemini-stream-text.sse")[:2]
    chunks, _ = run_stream(events)
    assert finish_reasons(chunks) == ["stop"]
    assert content_of(chunks) == "The capital of Wyoming"


# ------------------------------------------------------------------------------------------- errors


def test_error_400_api_key_invalid_is_auth_401_without_debug_info():
    raw = (FIXTURES / "gemini-error-400-api-key-invalid.json").read_bytes()
    err = gt.classify_error(400, raw, {})
    assert (err.outcome, err.status, err.upstream_status) == (AUTH, 401, 400)
    assert err.message == "gemini: API key not valid. Please pass a valid API key."
    assert "key1234" not in err.message  # DebugInfo carries the key; it is never shown


def test_error_message_never_contains_the_secret():
    body = {"error": {"code": 400, "message": "bad key AIzaSECRET123", "status": "INVALID_ARGUMENT"}}
    err = gt.classify_error(400, json.dumps(body).encode(), {}, secret="AIzaSECRET123")
    assert "AIzaSECRET123" not in err.message
    assert err.outcome == CLIENT


def test_error_403_permission_denied_is_auth():
    raw = (FIXTURES / "gemini-error-403-permission-denied.json").read_bytes()
    err = gt.classify_error(403, raw, {})
    assert (err.outcome, err.status) == (AUTH, 403)
    assert err.message.startswith("gemini: Generative Language API has not been used")


def test_error_429_retry_info():
    raw = (FIXTURES / "gemini-error-429-resource-exhausted.json").read_bytes()
    err = gt.classify_error(429, raw, {})
    assert (err.outcome, err.status, err.retry_after, err.daily) == (QUOTA, 429, 34.4, False)


def test_error_429_per_day_quota_is_daily():
    body = load_json("gemini-error-429-resource-exhausted.json")
    body["error"]["details"][0]["violations"].append(
        {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
    )
    err = gt.classify_error(429, json.dumps(body).encode(), {})
    assert err.outcome == QUOTA and err.daily is True and err.retry_after == 34.4


def test_error_429_wrapped_in_array_with_fractional_delay_in_message_only():
    body = load_json("gemini-error-429-resource-exhausted.json")
    body["error"]["details"] = [d for d in body["error"]["details"] if "RetryInfo" not in d["@type"]]
    body["error"]["message"] = "You exceeded your current quota.\nPlease retry in 20.523512914s."
    err = gt.classify_error(429, json.dumps([body]).encode(), {})
    assert err.outcome == QUOTA and err.retry_after == pytest.approx(20.523512914)


def test_error_429_retry_delay_with_nanoseconds_and_header_fallback():
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20.523512914s"}]}}  # fmt: skip
    assert gt.classify_error(429, json.dumps(body), {}).retry_after == pytest.approx(20.523512914)
    bare = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}}
    assert gt.classify_error(429, json.dumps(bare), {"Retry-After": "7"}).retry_after == 7.0
    assert gt.classify_error(429, json.dumps(bare), {}).retry_after is None


@pytest.mark.parametrize(
    ("status", "body", "outcome", "client_status"),
    [
        (404, {"error": {"code": 404, "message": "models/x not found", "status": "NOT_FOUND"}}, CLIENT, 404),
        (400, {"error": {"code": 400, "message": "Thinking level MINIMAL", "status": "INVALID_ARGUMENT"}},
         CLIENT, 400),
        (401, {"error": {"code": 401, "message": "no", "status": "UNAUTHENTICATED"}}, AUTH, 401),
        (500, {"error": {"code": 500, "message": "Internal", "status": "INTERNAL"}}, TRANSIENT, 502),
        (503, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
         TRANSIENT, 503),
        (504, {"error": {"code": 504, "message": "Deadline", "status": "DEADLINE_EXCEEDED"}}, TRANSIENT, 502),
        (502, b"<html>Bad Gateway</html>", TRANSIENT, 502),
        (429, b"not json", QUOTA, 429),
        (418, b"", CLIENT, 418),
    ],
)  # fmt: skip
def test_error_classification_by_status(status, body, outcome, client_status):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    err = gt.classify_error(status, raw, {})
    assert (err.outcome, err.status, err.upstream_status) == (outcome, client_status, status)
    assert err.message.startswith("gemini: ")


# ------------------------------------------------------------------------------------------- requests


def test_system_roles_and_merging():
    body = gt.to_gemini_request({"messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "?"},
    ]})  # fmt: skip
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "Answer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
        {"role": "model", "parts": [{"text": "Bonjour"}]},
        {"role": "user", "parts": [{"text": "?"}]},
    ]
    assert "generationConfig" not in body and "tools" not in body


def test_images():
    body = gt.to_gemini_request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
    ]}]})  # fmt: skip
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "gs://bucket/cat.jpg", "mimeType": "image/jpeg"}},
    ]
    with pytest.raises(BadRequest, match="data: URL"):
        gt.to_gemini_request({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})  # fmt: skip


def test_generation_config_fields():
    body = gt.to_gemini_request({
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 50,
        "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.3,
        "response_format": {"type": "json_object"},
    })  # fmt: skip
    assert body["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"],
        "candidateCount": 2, "seed": 7, "presencePenalty": 0.1, "frequencyPenalty": 0.3,
        "responseMimeType": "application/json",
    }  # fmt: skip
    body = gt.to_gemini_request({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100,
                                 "stop": ["a", "b"]})  # fmt: skip
    assert body["generationConfig"] == {"maxOutputTokens": 100, "stopSequences": ["a", "b"]}


def test_json_schema_is_sanitized():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "who"},
            "age": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                 "properties": {"k": {"const": "v"}}}},
        },
        "required": ["name"],
    }  # fmt: skip
    body = gt.to_gemini_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "strict": True, "schema": schema},
            },
        }
    )
    cfg = body["generationConfig"]
    assert cfg["responseMimeType"] == "application/json"
    assert cfg["responseSchema"] == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "who"},
            "age": {"type": "integer", "nullable": True},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"enum": ["v"]}}}},
        },
        "required": ["name"],
    }


def test_tools_and_tool_choice():
    tools = [
        {"type": "function", "function": {"name": "weather", "description": "Get weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
            "additionalProperties": False}, "strict": True}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]  # fmt: skip
    base = {"messages": [{"role": "user", "content": "x"}], "tools": tools}
    body = gt.to_gemini_request(base)
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "weather", "description": "Get weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "now"},
    ]}]  # fmt: skip
    assert "toolConfig" not in body
    expected = {"none": {"mode": "NONE"}, "auto": {"mode": "AUTO"}, "required": {"mode": "ANY"}}
    for choice, cfg in expected.items():
        assert gt.to_gemini_request({**base, "tool_choice": choice})["toolConfig"] == {
            "functionCallingConfig": cfg
        }
    forced = gt.to_gemini_request({**base, "tool_choice": {"type": "function", "function": {"name": "now"}}})
    assert forced["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}}
    with pytest.raises(BadRequest):
        gt.to_gemini_request({**base, "tool_choice": "sometimes"})


def test_consecutive_tool_messages_share_one_user_turn():
    body = gt.to_gemini_request({"messages": [
        {"role": "user", "content": "both"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_2", "content": "[1, 2]"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": '{"ok": true}'}]},
    ]})  # fmt: skip
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "Calling."},
        {"functionCall": {"name": "a", "args": {"x": 1}}},
        {"functionCall": {"name": "b", "args": {}}},
    ]}  # fmt: skip
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "b", "response": {"result": "[1, 2]"}}},
        {"functionResponse": {"name": "a", "response": {"ok": True}}},
    ]}  # fmt: skip
    assert len(body["contents"]) == 3


def test_bad_requests():
    with pytest.raises(BadRequest, match="matches no earlier tool call"):
        gt.to_gemini_request({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]})
    with pytest.raises(BadRequest, match="not valid JSON"):
        gt.to_gemini_request({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "a", "arguments": "{oops"}}]}]})  # fmt: skip
    with pytest.raises(BadRequest):
        gt.to_gemini_request({"messages": []})
    with pytest.raises(BadRequest):
        gt.to_gemini_request({"messages": [{"role": "system", "content": "only system"}]})


def test_reasoning_effort():
    msgs = [{"role": "user", "content": "x"}]
    cfg = gt.to_gemini_request({"messages": msgs, "reasoning_effort": "low"}, "gemini-2.5-flash")
    assert cfg["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    cfg = gt.to_gemini_request({"messages": msgs, "reasoning_effort": "high"}, "gemini-3-pro-preview")
    assert cfg["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high"}


# ------------------------------------------------------------------------------------- embeddings, models


def test_embed_requests():
    assert gt.to_gemini_embed({"input": "hello", "dimensions": 256}, "text-embedding-004") == (
        ":embedContent", {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 256}
    )  # fmt: skip
    method, body = gt.to_gemini_embed({"input": ["a", "b"]}, "text-embedding-004")
    assert method == ":batchEmbedContents"
    assert body == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
    ]}  # fmt: skip
    for bad in ([1, 2, 3], [[1, 2]], [], None):
        with pytest.raises(BadRequest):
            gt.to_gemini_embed({"input": bad}, "m")


def test_embed_responses():
    single = gt.from_gemini_embed({"embedding": {"values": [0.5, -1.0]}}, "emb")
    assert single == {
        "object": "list", "model": "emb", "usage": {"prompt_tokens": 0, "total_tokens": 0},
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
    }  # fmt: skip
    batch = gt.from_gemini_embed({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}, "emb")
    assert [d["embedding"] for d in batch["data"]] == [[1.0], [2.0]]
    b64 = gt.from_gemini_embed({"embedding": {"values": [0.5, -1.0]}}, "emb", "base64")
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)

