"""Gemini stream events ⇄ the generateContent answer (``proxy.cache.replay``), and the Responses API's
cache key over ``previous_response_id`` (the turns it resolves to)."""
from __future__ import annotations

import copy

from proxy.api.responses import cache_body
from proxy.cache.key import cache_key
from proxy.cache.replay import assemble_gemini, replay_gemini

USAGE = {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12}


def event(parts: list[dict], finish: str | None = None, **extra: object) -> dict:
    cand: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "modelVersion": "gemini-2.5-flash", "responseId": "r1", **extra}


def test_text_events_fold_into_one_answer_and_replay_back():
    events = [event([{"text": "thinking", "thought": True}], usageMetadata={"promptTokenCount": 5}),
              event([{"text": "Hel"}]), event([{"text": "lo"}]),
              event([{"text": "!"}], "STOP", usageMetadata=USAGE)]
    answer = assemble_gemini(copy.deepcopy(events))
    assert answer == {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "thinking", "thought": True}, {"text": "Hello!"}]}, "index": 0, "finishReason": "STOP"}],
        "modelVersion": "gemini-2.5-flash", "responseId": "r1", "usageMetadata": USAGE}
    replayed = replay_gemini(answer)
    assert [e["candidates"][0]["content"]["parts"] for e in replayed] == [
        [{"text": "thinking", "thought": True}], [{"text": "Hello!"}]]
    assert "finishReason" not in replayed[0]["candidates"][0] and "usageMetadata" not in replayed[0]
    assert replayed[-1]["candidates"][0]["finishReason"] == "STOP" and replayed[-1]["usageMetadata"] == USAGE
    assert assemble_gemini(replayed) == answer  # the replay folds back into the same answer


def test_function_calls_and_signatures_stay_whole():
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}
    answer = assemble_gemini([event([{"text": "Let me look."}]),
                              event([call], "STOP", usageMetadata=USAGE)])
    assert answer is not None
    assert answer["candidates"][0]["content"]["parts"] == [{"text": "Let me look."}, call]
    assert assemble_gemini(replay_gemini(answer)) == answer
    single = event([{"text": "hi"}], "STOP", usageMetadata=USAGE)
    assert replay_gemini(single) == [single]


def test_an_error_event_or_a_missing_finish_reason_is_incomplete():
    failed = {"error": {"code": 502, "status": "UNAVAILABLE"}}
    assert assemble_gemini([event([{"text": "a"}]), failed]) is None
    assert assemble_gemini([event([{"text": "a"}]), event([{"text": "b"}])]) is None
    assert assemble_gemini([]) is None


def test_previous_response_id_is_keyed_by_the_turns_it_resolves_to():
    turns = [{"role": "user", "content": "remember 7"}, {"role": "assistant", "content": "ok"}]
    a = {"model": "m", "input": "and?", "previous_response_id": "resp_a"}
    b = {**a, "previous_response_id": "resp_b"}
    assert cache_key("/v1/responses", cache_body(a, turns), "c") == cache_key("/v1/responses",
                                                                              cache_body(b, turns), "c")
    other = [{"role": "user", "content": "remember 8"}, {"role": "assistant", "content": "ok"}]
    assert cache_key("/v1/responses", cache_body(a, turns), "c") != cache_key("/v1/responses",
                                                                              cache_body(a, other), "c")
    plain = {"model": "m", "input": "and?"}
    assert cache_body(plain, []) is plain
