"""Limits learned from the upstream's own answers, as plain data (no I/O).

- A Gemini 429 carries ``QuotaFailure.violations[]``: ``quotaId`` names the window (``…PerMinute…`` /
  ``…PerDay…``) and the measure (``…InputTokens…`` / ``…Token…``: tokens, else requests),
  ``quotaValue`` (a string, sometimes absent: then the message's ``limit: N``) the number and
  ``quotaDimensions.model`` the model. One 429 can carry several violations. A PerDay 429 also says the
  day is spent (``used``); a PerMinute one needs no such note: keyrelay counts its own requests in the
  sliding minute, and the 429's cooldown (``retryDelay``) lasts until the upstream's first slot frees.
- OpenAI-style answers carry ``x-ratelimit-limit-requests`` / ``-tokens`` (with ``-remaining-`` and
  ``-reset-``); OpenRouter ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (epoch ms). The window is
  the minute unless the reset is more than a minute away (then the day).

Sources: docs/upstream-api-notes.md §2.2 and §9.2.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GEMINI_429 = "gemini_429"
HEADERS = "headers"

_LIMIT_LINE = re.compile(r"metric:\s*(?P<metric>[^,\s]+)[^\n]*?limit:\s*(?P<limit>\d+)"
                         r"(?:[^\n]*?model:\s*(?P<model>[\w.\-]+))?")
_LIMIT_ANY = re.compile(r"limit:\s*(\d+)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Learned:
    """One limit an answer revealed. ``model`` None: the model of the request that got the answer.
    ``used``: how much of the window is spent now, when the answer says (a 429: all of it)."""

    kind: str  # rpm | tpm | rpd | tpd
    value: int
    source: str
    model: str | None = None
    used: int | None = None


def _positive_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    return v if isinstance(v, int) and v > 0 else None


def quota_kind(quota_id: str, metric: str = "") -> str | None:
    """``rpm`` / ``tpm`` / ``rpd`` / ``tpd`` for a Gemini quotaId (None when it names no window)."""
    window = "m" if "PerMinute" in quota_id else "d" if "PerDay" in quota_id else None
    if window is None:
        return None
    tokens = "Token" in quota_id or "token" in metric
    return ("t" if tokens else "r") + "p" + window


def _from_message(message: str, metric: str, only: bool) -> tuple[int | None, str | None]:
    """The "limit: N" (and "model: X") of the message line about ``metric``; with a single violation,
    the message's only limit."""
    for m in _LIMIT_LINE.finditer(message):
        if metric and m.group("metric") == metric:
            return int(m.group("limit")), m.group("model")
    found = _LIMIT_ANY.findall(message)
    return (int(found[0]), None) if only and len(found) == 1 else (None, None)


def from_gemini_error(err: Mapping[str, Any]) -> list[Learned]:
    """The limits a Gemini error envelope (``{"code", "message", "status", "details"}``) names."""
    message = str(err.get("message") or "")
    violations = [v for d in err.get("details") or [] if isinstance(d, dict)
                  and str(d.get("@type", "")).endswith("google.rpc.QuotaFailure")
                  for v in d.get("violations") or [] if isinstance(v, dict)]
    out = []
    for v in violations:
        metric = str(v.get("quotaMetric") or "")
        kind = quota_kind(str(v.get("quotaId") or ""), metric)
        if kind is None:
            continue
        value = _positive_int(v.get("quotaValue"))
        dims = v.get("quotaDimensions")
        model = dims.get("model") if isinstance(dims, dict) and isinstance(dims.get("model"), str) else None
        if value is None:
            value, msg_model = _from_message(message, metric, len(violations) == 1)
            model = model or msg_model
        if value is not None:
            spent = value if kind in ("rpd", "tpd") else None
            out.append(Learned(kind, value, GEMINI_429, _model(model), used=spent))
    return out


def _model(name: str | None) -> str | None:
    return name[len("models/"):] if name and name.startswith("models/") else name or None


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    for k, v in headers.items():
        if k.lower() == name:
            return str(v)
    return None


def duration_s(text: str | None) -> float | None:
    """An OpenAI reset duration ("1s", "6m0s", "120ms", "1h2m") in seconds, or None."""
    if not text:
        return None
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def from_headers(headers: Any, now: float) -> list[Learned]:
    """Limits in an answer's rate-limit headers (OpenAI ``x-ratelimit-*``, OpenRouter ``X-RateLimit-*``)."""
    out = []
    for measure in ("requests", "tokens"):
        value = _positive_int(_header(headers, f"x-ratelimit-limit-{measure}"))
        if value is None:
            continue
        reset = duration_s(_header(headers, f"x-ratelimit-reset-{measure}"))
        kind = ("r" if measure == "requests" else "t") + ("pd" if reset and reset > 60 else "pm")
        out.append(Learned(kind, value, HEADERS, used=_used(value, _header(headers, f"x-ratelimit-remaining-"
                                                                                   f"{measure}"))))
    value = _positive_int(_header(headers, "x-ratelimit-limit"))
    if value is not None:  # OpenRouter: requests; X-RateLimit-Reset is epoch milliseconds
        reset_ms = _positive_int(_header(headers, "x-ratelimit-reset"))
        daily = reset_ms is not None and reset_ms / 1000 - now > 60
        out.append(Learned("rpd" if daily else "rpm", value, HEADERS,
                           used=_used(value, _header(headers, "x-ratelimit-remaining"))))
    return out


def _used(limit: int, remaining: str | None) -> int | None:
    if remaining is None or not remaining.strip().isdigit():
        return None
    return max(0, limit - int(remaining.strip()))
