"""Client-facing Anthropic shape: request/response translation and the stream encoder.

The encoder's output is checked for legal event order and fed through the official anthropic SDK's own
SSE decoding and stream accumulator (via an httpx mock transport), which must rebuild the message.
"""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest

try:  # the installed anthropic SDK is built on httpx2; older ones on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from proxy.api.anthropic_shape import (
    AnthropicStreamEncoder,
    anthropic_to_openai_request,
    openai_to_anthropic_response,
)
from proxy.errors import BadRequest, UpstreamError
from proxy.providers.anthropic import AnthropicStreamTranslator
from proxy.providers.http import iter_sse_data

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def sse_file(name: str) -> list[tuple[str | None, str]]:
    raw = (FIXTURES / name).read_bytes()
    return list(iter_sse_data(iter(raw.splitlines())))


def openai_chunks(name: str) -> list[dict]:
    return [json.loads(data) for _, data in sse_file(name) if data != "[DONE]"]


def encode(chunks: list[dict], model: str = "alias") -> list[tuple[str, dict]]:
    enc = AnthropicStreamEncoder(model)
    events = [e for c in chunks for e in enc.feed(c)]
    return events + enc.finish()


def assert_legal_order(events: list[tuple[str, dict]]) -> None:
    """message_start, then properly nested blocks with increasing indexes, message_delta, message_stop."""
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index = None
    next_index = 0
    for name, data in events[1:-2]:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event {name}")
    assert open_index is None


def sdk_final_message(events: list[tuple[str, dict]]) -> anthropic.types.Message:
    """Serve the events as SSE to the official SDK and let its stream helper accumulate them."""
    body = b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with client.messages.stream(
        model="alias", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        return stream.get_final_message()


# ---------------------------------------------------------------- request translation


def test_request_basic_fields():
    req = anthropic_to_openai_request(
        {
            "model": "claude-alias",
            "max_tokens": 256,
            "system": "Be terse.",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.3,
            "top_p": 0.8,
            "top_k": 40,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u"},
            "stream": True,
        }
    )
    assert req == {
        "model": "claude-alias",
        "max_tokens": 256,
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        "temperature": 0.3,
        "top_p": 0.8,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_request_system_blocks_and_images():
    req = anthropic_to_openai_request(
        {
            "model": "m",
            "max_tokens": 1,
            "system": [
                {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "B"},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is it?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                    ],
                }
            ],
        }
    )
    assert req["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert req["messages"][1]["content"] == [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]


def test_request_tool_use_history_and_tool_results():
    req = anthropic_to_openai_request(
        {
            "model": "m",
            "max_tokens": 100,
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "20C"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": "boom",
                            "is_error": True,
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        }
    )
    assert req["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert req["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert req["parallel_tool_calls"] is False
    assert req["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "20C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert "hmm" not in json.dumps(req)


@pytest.mark.parametrize(
    "choice,expected", [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")]
)
def test_request_tool_choice(choice, expected):
    req = anthropic_to_openai_request(
        {"model": "m", "max_tokens": 1, "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]}
    )
    assert req["tool_choice"] == expected and "parallel_tool_calls" not in req


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 1}, "messages"),
        ({"model": "m", "max_tokens": 1, "messages": []}, "messages"),
        (
            {"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages[0].content[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "tool"},
            },
            "tool_choice",
        ),
    ],
)
def test_request_validation(body, needle):
    with pytest.raises(BadRequest) as exc:
        anthropic_to_openai_request(body)
    assert needle in exc.value.message and exc.value.status == 400


# ---------------------------------------------------------------- response translation


def test_response_text_and_tool_use():
    resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 9,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }
    msg = openai_to_anthropic_response(resp, "alias")
    assert msg["id"].startswith("msg_") and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["model"] == "alias" and msg["stop_reason"] == "tool_use" and msg["stop_sequence"] is None
    assert msg["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert msg["usage"] == {"input_tokens": 12, "output_tokens": 9, "cache_read_input_tokens": 8}
    # the SDK's own model accepts it
    assert anthropic.types.Message.model_validate(msg).content[1].input == {"city": "Paris"}


@pytest.mark.parametrize(
    "finish,stop",
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_response_stop_reason(finish, stop):
    resp = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}], "usage": {}}
    assert openai_to_anthropic_response(resp, "m")["stop_reason"] == stop


def test_response_bad_tool_arguments_are_kept_not_lost():
    resp = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    msg = openai_to_anthropic_response(resp, "m")
    assert msg["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {"_raw": "{not json"}}]
    assert msg["usage"] == {"input_tokens": 0, "output_tokens": 0}


# ---------------------------------------------------------------- stream encoder


def test_encoder_text_only_stream_from_recorded_openai_stream():
    chunks = openai_chunks("openai-stream-text-usage.sse")
    events = encode(chunks)
    assert_legal_order(events)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_start") == 1
    expected_text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == expected_text and text
    usage = next(c["usage"] for c in chunks if c.get("usage"))
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "output_tokens": usage["completion_tokens"],
        "input_tokens": usage["prompt_tokens"],
    }

    final = sdk_final_message(events)
    assert final.content[0].type == "text" and final.content[0].text == expected_text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == usage["completion_tokens"]
    assert final.usage.input_tokens == usage["prompt_tokens"]


def test_encoder_parallel_tool_calls_from_recorded_openai_stream():
    chunks = openai_chunks("openai-stream-parallel-tool-calls.sse")
    events = encode(chunks)
    assert_legal_order(events)
    starts = [d["content_block"] for e, d in events if e == "content_block_start"]
    assert [b["type"] for b in starts] == ["tool_use", "tool_use"]
    assert all(b["input"] == {} and b["id"].startswith("call_") for b in starts)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    final = sdk_final_message(events)
    assert [b.type for b in final.content] == ["tool_use", "tool_use"]
    expected: dict[int, str] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            expected[tc["index"]] = expected.get(tc["index"], "") + tc["function"].get("arguments", "")
    assert [b.name for b in final.content] == ["GetWeatherArgs", "get_stock_price"]
    assert [b.input for b in final.content] == [json.loads(expected[0]), json.loads(expected[1])]
    assert final.content[1].input["ticker"] == "AAPL"
    assert final.stop_reason == "tool_use"


def test_encoder_switching_from_text_to_tool_closes_text_block_first():
    base = {"object": "chat.completion.chunk"}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {"content": "Checking"}, "finish_reason": None}]},
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
    ]
    events = encode(chunks)
    assert_legal_order(events)
    assert [e for e, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    final = sdk_final_message(events)
    assert final.content[0].text == "Checking" and final.content[1].input == {"x": 1}


def test_encoder_finish_without_finish_reason_and_is_idempotent():
    enc = AnthropicStreamEncoder("m")
    events = enc.feed({"choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]})
    events += enc.finish()
    assert_legal_order(events)
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert enc.finish() == [] and enc.feed({"choices": []}) == []


def test_encoder_finish_on_empty_stream_is_still_a_legal_message():
    events = AnthropicStreamEncoder("m").finish()
    assert [e for e, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert sdk_final_message(events).content == []


def test_error_event_shape():
    name, data = AnthropicStreamEncoder.error_event(
        UpstreamError("upstream overloaded", outcome="transient", status=503)
    )
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error", "message": "upstream overloaded"}}
    assert AnthropicStreamEncoder.error_event(RuntimeError("secret internals"))[1]["error"] == {
        "type": "api_error",
        "message": "internal error",
    }


def test_round_trip_anthropic_upstream_to_anthropic_client():
    """Recorded Anthropic stream -> internal OpenAI chunks -> Anthropic events -> SDK message."""
    tr = AnthropicStreamTranslator("alias", include_usage=True)
    chunks = [
        c
        for event, data in sse_file("anthropic-stream-tool-use.sse")
        for c in tr.feed(event, json.loads(data))
    ]
    events = encode(chunks)
    assert_legal_order(events)
    final = sdk_final_message(events)
    assert final.content[0].text == "I'll check the current weather in Paris for you."
    assert final.content[1].type == "tool_use" and final.content[1].id == "toolu_01NRLabsLyVHZPKxbKvkfSMn"
    assert final.content[1].input == {"location": "Paris"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (377, 65)
