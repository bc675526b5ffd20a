"""Limits learned from upstream answers (proxy/keys/learn.py), pinned to recorded payloads."""
from __future__ import annotations

import copy
import json

from proxy.errors import QUOTA
from proxy.keys.learn import (
    GEMINI_429,
    HEADERS,
    Learned,
    duration_s,
    from_gemini_error,
    from_headers,
    quota_kind,
)
from proxy.providers import gemini_translate as gt
from tests.harness import FIXTURES

NOW = 1_700_000_000.0


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_the_recorded_429_names_a_per_minute_request_quota_without_a_number():
    err = fixture("gemini-error-429-resource-exhausted.json")["error"]
    (violation,) = err["details"][0]["violations"]
    assert quota_kind(violation["quotaId"]) == "rpm"
    # no quotaValue and no "limit: N" in its (shortened) message: there is no number to learn
    assert from_gemini_error(err) == []
    exc = gt.classify_error(429, json.dumps({"error": err}))
    assert exc.outcome == QUOTA and exc.retry_after == 34.4 and exc.limits == []


def test_the_full_recorded_429_teaches_rpm_5_for_its_model():
    body = fixture("gemini-error-429-quota-value.json")
    expected = [Learned("rpm", 5, GEMINI_429, "gemini-2.5-flash")]
    assert from_gemini_error(body["error"]) == expected
    exc = gt.classify_error(429, json.dumps(body))
    assert exc.limits == expected and exc.retry_after == 20.0 and not exc.daily


def test_without_quota_value_the_message_says_the_limit():
    body = fixture("gemini-error-429-quota-value.json")
    v = body["error"]["details"][1]["violations"][0]
    del v["quotaValue"], v["quotaDimensions"]
    assert from_gemini_error(body["error"]) == [Learned("rpm", 5, GEMINI_429, "gemini-2.5-flash")]


def test_several_violations_in_one_429():
    body = fixture("gemini-error-429-quota-value.json")
    qf = body["error"]["details"][1]
    base = qf["violations"][0]
    day = {**copy.deepcopy(base), "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
           "quotaValue": "250"}
    tokens = {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
              "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
              "quotaDimensions": {"location": "global", "model": "models/gemini-2.5-flash"},
              "quotaValue": "250000"}
    qf["violations"] = [day, base, tokens, {"quotaId": "SomethingElse", "quotaValue": "3"}]
    got = from_gemini_error(body["error"])
    assert [(x.kind, x.value, x.model, x.used) for x in got] == [
        ("rpd", 250, "gemini-2.5-flash", 250), ("rpm", 5, "gemini-2.5-flash", None),
        ("tpm", 250000, "gemini-2.5-flash", None)]  # the day is spent; minutes are counted by keyrelay
    assert gt.classify_error(429, json.dumps(body)).daily  # a PerDay violation: parked until the reset


def test_quota_kinds():
    assert quota_kind("GenerateRequestsPerDayPerProjectPerModel-FreeTier") == "rpd"
    assert quota_kind("GenerateContentInputTokensPerModelPerMinute-FreeTier") == "tpm"
    assert quota_kind("GenerateContentInputTokensPerModelPerDay-FreeTier") == "tpd"
    assert quota_kind("GenerateRequestsPerProject") is None


def test_bad_values_are_ignored():
    body = fixture("gemini-error-429-quota-value.json")
    body["error"]["details"][1]["violations"][0]["quotaValue"] = "-3"
    body["error"]["message"] = "quota exceeded"
    assert from_gemini_error(body["error"]) == []
    assert from_gemini_error({"details": "nope"}) == []


def test_openai_headers():
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "58",
               "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": "150000",
               "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s"}
    assert from_headers(headers, NOW) == [Learned("rpm", 60, HEADERS, used=2),
                                          Learned("tpd", 150000, HEADERS, used=16)]


def test_openrouter_headers():
    minute = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "19",
              "X-RateLimit-Reset": str(int((NOW + 30) * 1000))}
    assert from_headers(minute, NOW) == [Learned("rpm", 20, HEADERS, used=1)]
    day = {**minute, "X-RateLimit-Reset": str(int((NOW + 3 * 3600) * 1000))}
    assert from_headers(day, NOW) == [Learned("rpd", 20, HEADERS, used=1)]
    assert from_headers({"X-RateLimit-Limit": "lots"}, NOW) == []


def test_durations():
    assert duration_s("1s") == 1 and duration_s("6m0s") == 360 and duration_s("120ms") == 0.12
    assert duration_s("1h2m") == 3720 and duration_s("soon") is None and duration_s("") is None
