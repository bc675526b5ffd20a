"""Stored answers ⇄ streams (proxy/cache/replay.py), pinned to recorded upstream streams."""
from __future__ import annotations

import json
from pathlib import Path

from proxy.cache.replay import assemble_chunks, assemble_events, replay_chunks, replay_events
from tests.unit.test_response_schemas import chunks as schema_chunks
from tests.unit.test_response_schemas import completion as schema_completion

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def sse_items(name: str) -> list[tuple[str, dict]]:
    out = []
    for frame in (FIXTURES / name).read_text().split("\n\n"):
        event, data = "", None
        for line in frame.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and line[6:] != "[DONE]":
                data = json.loads(line[6:])
        if data is not None:
            out.append((event, data))
    return out


def openai_chunks(name: str) -> list[dict]:
    return [data for _, data in sse_items(name)]


def test_openai_tool_call_stream_round_trip():
    recorded = openai_chunks("openai-stream-parallel-tool-calls.sse")
    completion = assemble_chunks(recorded)
    assert completion is not None
    schema_completion(completion, strict=False)
    message = completion["choices"][0]["message"]
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    calls = message["tool_calls"]
    assert len(calls) >= 2 and all(c["id"].startswith("call_") for c in calls)
    for call in calls:
        json.loads(call["function"]["arguments"])  # the fragments joined into whole JSON
    replayed = replay_chunks(completion)
    schema_chunks(replayed, strict=False)
    assert assemble_chunks(replayed) == completion


def test_openai_text_stream_round_trip_keeps_usage():
    recorded = openai_chunks("openai-stream-text-usage.sse")
    completion = assemble_chunks(recorded)
    assert completion is not None and completion["usage"] == recorded[-1]["usage"]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in recorded if c["choices"])
    assert completion["choices"][0]["message"]["content"] == text
    replayed = replay_chunks(completion)
    assert replayed[-1] == {**{k: replayed[0][k] for k in ("id", "object", "created", "model")},
                            **({"system_fingerprint": completion["system_fingerprint"]}
                               if "system_fingerprint" in completion else {}),
                            "choices": [], "usage": completion["usage"]}
    assert assemble_chunks(replayed) == completion


def test_an_openai_stream_without_a_finish_reason_is_incomplete():
    recorded = openai_chunks("openai-stream-text-usage.sse")
    cut = [c for c in recorded if not any(ch.get("finish_reason") for ch in c["choices"])]
    assert assemble_chunks(cut) is None
    assert assemble_chunks([]) is None


def test_a_completion_replays_as_chunks_the_sdk_shape_accepts():
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls",
                               "message": {"role": "assistant", "content": "ok", "refusal": None,
                                           "tool_calls": [{"id": "call_1", "type": "function",
                                                           "function": {"name": "f", "arguments": "{}"}}]}}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    schema_completion(completion)
    replayed = replay_chunks(completion)
    schema_chunks(replayed)
    assert assemble_chunks(replayed) == completion


def test_anthropic_tool_use_stream_round_trip():
    events = sse_items("anthropic-stream-tool-use.sse")
    message = assemble_events(events)
    assert message is not None
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][0]["text"] == "I'll check the current weather in Paris for you."
    assert message["content"][1]["input"] == {"location": "Paris"}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 377 and message["usage"]["output_tokens"] == 65
    replayed = replay_events(message)
    names = [name for name, _ in replayed]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in replayed)
    assert assemble_events(replayed) == message


def test_anthropic_thinking_and_other_blocks_round_trip():
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                           {"type": "redacted_thinking", "data": "xyz"},
                           {"type": "text", "text": "hi", "citations": [{"type": "char_location"}]}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 5, "output_tokens": 7}}
    assert assemble_events(replay_events(message)) == message


def test_an_anthropic_stream_with_an_error_or_without_its_end_is_incomplete():
    events = sse_items("anthropic-stream-tool-use.sse")
    assert assemble_events(events[:-1]) is None
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    assert assemble_events([*events[:5], error, *events[5:]]) is None
