"""Quota enforcement for the mock upstream: N requests per sliding minute and/or per day, per key (or per
project, when keys are mapped to one) and model, refused with the upstream's real-shaped 429.

Gemini: ``QuotaFailure`` with ``quotaMetric`` / ``quotaId`` / ``quotaDimensions`` / ``quotaValue`` and
``RetryInfo`` (the message repeats "limit: N, model: M"), as recorded in docs/upstream-api-notes.md §2.2;
a PerDay refusal keeps a short ``retryDelay`` ("29s"), as seen in the wild. OpenAI: the 429 envelope with
``x-ratelimit-limit-requests`` / ``-remaining-`` / ``-reset-`` headers (also sent on successes).

    mock.quota = QuotaLimiter(rpm=5)                 # every key, every model
    mock.quota = QuotaLimiter(rpd=2, models={"gemini-2.5-pro"}, clock=lambda: now[0])
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from tests.mock_upstream.errors import openai_error

COUNTED_OPS = frozenset({"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents",
                         "chat/completions", "embeddings", "messages"})

_METRIC = {"rpm": "generate_content_free_tier_requests", "rpd": "generate_content_free_tier_requests"}
_QUOTA_ID = {"rpm": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
             "rpd": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}


@dataclass
class QuotaLimiter:
    rpm: int | None = None
    rpd: int | None = None
    window_s: float = 60.0  # the sliding minute (shorter in accelerated tests)
    models: Collection[str] | None = None  # enforce only for these models (None: all)
    projects: Mapping[str, str] = field(default_factory=dict)  # key → project: counted together
    include_value: bool = True  # False: no quotaValue (the limit is only in the message)
    day_retry_delay: str = "29s"
    clock: Callable[[], float] = time.time
    refused: list[dict] = field(default_factory=list)  # every 429 sent: {"key", "model", "kind", "at"}

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._minute: dict[tuple[str, str], deque[float]] = {}
        self._day: dict[tuple[str, str], int] = {}

    def _scope(self, key: str | None, model: str) -> tuple[str, str]:
        k = key or ""
        return self.projects.get(k, k), model

    def check(self, key: str | None, model: str, dialect: str) -> tuple[int, dict, dict] | None:
        """None (the request is counted) or the refusal: (status, body, headers)."""
        if self.models is not None and model not in self.models:
            return None
        now = self.clock()
        scope = self._scope(key, model)
        with self._lock:
            hits = self._minute.setdefault(scope, deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            kind = None
            if self.rpd is not None and self._day.get(scope, 0) >= self.rpd:
                kind, retry = "rpd", self.day_retry_delay
            elif self.rpm is not None and len(hits) >= self.rpm:
                kind, retry = "rpm", f"{max(0.0, hits[0] + self.window_s - now):.3f}s"
            if kind is None:
                hits.append(now)
                self._day[scope] = self._day.get(scope, 0) + 1
                return None
            self.refused.append({"key": key, "model": model, "kind": kind, "at": now})
        limit = self.rpd if kind == "rpd" else self.rpm
        assert limit is not None
        if dialect == "gemini":
            return 429, gemini_quota_error(kind, limit, model, retry, include_value=self.include_value), {}
        return 429, openai_error(429, f"Rate limit reached for {model} on requests per "
                                      f"{'day (RPD)' if kind == 'rpd' else 'min (RPM)'}: Limit {limit}, "
                                      f"Used {limit}, Requested 1."), self._openai_headers(scope, now)

    def headers(self, key: str | None, model: str, dialect: str) -> dict:
        """Rate-limit headers of a successful answer (OpenAI dialect only; Gemini sends none)."""
        if dialect != "openai" or self.rpm is None or (self.models is not None and model not in self.models):
            return {}
        with self._lock:
            return self._openai_headers(self._scope(key, model), self.clock())

    def _openai_headers(self, scope: tuple[str, str], now: float) -> dict:
        if self.rpm is None:
            return {}
        hits = self._minute.get(scope) or deque()
        reset = max(0.0, hits[0] + self.window_s - now) if hits else 0.0
        return {"x-ratelimit-limit-requests": str(self.rpm),
                "x-ratelimit-remaining-requests": str(max(0, self.rpm - len(hits))),
                "x-ratelimit-reset-requests": f"{math.ceil(reset)}s"}


def gemini_quota_error(kind: str, limit: int, model: str, retry_delay: str, *,
                       include_value: bool = True) -> dict:
    """The full Gemini 429 body (docs/upstream-api-notes.md §2.2) for one violated quota."""
    metric = "generativelanguage.googleapis.com/" + _METRIC[kind]
    violation = {"quotaMetric": metric, "quotaId": _QUOTA_ID[kind],
                 "quotaDimensions": {"location": "global", "model": model}}
    if include_value:
        violation["quotaValue"] = str(limit)
    message = ("You exceeded your current quota, please check your plan and billing details. For more "
               "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To "
               "monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for "
               f"metric: {metric}, limit: {limit}, model: {model}\nPlease retry in {retry_delay}.")
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]}}
