"""Adapter for OpenAI-compatible upstreams (OpenAI, OpenRouter, Groq, vLLM, Gemini's /openai endpoint).

The request is passed through with ``model`` replaced by the upstream id (``call.model``). The answer's
``model`` is ``req["model"]``, which the relay sets to the upstream model that answered (so a client
asking for an alias learns which target served it, as with every other adapter).

Error policy (classify_error):
- 401 -> AUTH 401, 403 -> AUTH 403. The upstream message is NOT shown for auth errors: OpenAI echoes a
  masked key ("sk-VKMIs***...wjh3") and keys never appear in our errors.
- 429 -> QUOTA 429, retry_after from Retry-After / retry-after-ms / x-ratelimit-reset-{requests,tokens}
  / "Please try again in 6ms". ``insufficient_quota`` (billing exhausted) and 402 (OpenRouter: no
  credits) -> QUOTA with ``daily=True``: the key is spent until someone pays, so it gets the long cooldown.
- 408 -> TRANSIENT 504; other 4xx -> CLIENT with the same status; 5xx -> TRANSIENT 502 (503 for 503/529).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from proxy.errors import TRANSIENT, UpstreamError
from proxy.keys import learn
from proxy.providers import http
from proxy.providers import toolkit as tk
from proxy.providers.base import Call

_KEYLIKE = re.compile(r"\b(?:sk-|gsk_|AIza)[-_A-Za-z0-9*.]{6,}")
_TRY_AGAIN = re.compile(r"try again in ((?:[0-9.]+(?:ms|h|m|s))+)", re.IGNORECASE)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def redact(message: str, secret: str | None = None) -> str:
    """Remove the secret and anything that looks like an (even masked) API key from a message."""
    if secret:
        message = message.replace(secret, "***")
    return _KEYLIKE.sub("[redacted]", message)


def parse_duration(value: str | None) -> float | None:
    """OpenAI reset durations ("6m0s", "1s", "20ms", "1h2m3.5s", "0.5") in seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


_SERVER_STATUSES = {408: 504, 503: 503, 529: 503}


def _retry_after(headers: Mapping[str, Any] | None, message: str) -> float | None:
    value = http.parse_retry_after(tk.header(headers, "retry-after"))
    if value is not None:
        return value
    ms = tk.header(headers, "retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    resets = {}
    for kind in ("requests", "tokens"):
        reset = parse_duration(tk.header(headers, f"x-ratelimit-reset-{kind}"))
        if reset is not None:
            resets[kind] = reset
    exhausted = [v for k, v in resets.items() if tk.header(headers, f"x-ratelimit-remaining-{k}") == "0"]
    if exhausted or resets:
        return max(exhausted or resets.values())
    m = _TRY_AGAIN.search(message)
    return parse_duration(m.group(1)) if m else None


def _error_object(body: bytes | str | Mapping | None) -> dict:
    obj = tk.json_body(body)
    if isinstance(obj, list):
        obj = obj[0] if obj else {}
    if not isinstance(obj, dict):
        return {}
    err = obj.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    if isinstance(obj.get("detail"), str):  # FastAPI-style servers (vLLM and friends)
        return {"message": obj["detail"]}
    if isinstance(obj.get("message"), str):
        return {"message": obj["message"]}
    return {}


def classify_error(
    status: int,
    body: bytes | str | Mapping | None,
    headers: Mapping[str, Any] | None = None,
    *,
    secret: str | None = None,
    prefix: str = "upstream",
) -> UpstreamError:
    """Decide the outcome of an OpenAI-style error answer and what the client should see."""
    err = _error_object(body)
    code = str(err.get("code") or "")
    kind = str(err.get("type") or "")
    message = redact(str(err.get("message") or f"upstream answered HTTP {status}"), secret)[:1000]
    text = f"{prefix}: {message}"

    if status == 401:
        return tk.status_error(401, f"{prefix}: upstream rejected the API key", code="invalid_api_key")
    if status == 403:
        return tk.status_error(403, f"{prefix}: upstream denied access (HTTP 403)", code="permission_denied")
    if status == 402 or (status == 429 and "insufficient_quota" in (code, kind)):
        retry = http.parse_retry_after(tk.header(headers, "retry-after"))
        return tk.status_error(
            429, text, upstream_status=status, daily=True, code="insufficient_quota", retry_after=retry
        )
    if status == 429:
        return tk.status_error(
            429, text, retry_after=_retry_after(headers, message), code="rate_limit_exceeded"
        )
    client_code = (code or None) if 400 <= status < 500 and status != 408 else None
    return tk.status_error(status, text, server_statuses=_SERVER_STATUSES, code=client_code)


def _embedded_status(err: Mapping[str, Any]) -> int:
    return tk.embedded_status(err.get("code"))


class OpenAIAdapter:
    """Implements proxy.providers.base.Adapter for OpenAI-compatible Chat Completions servers."""

    def __init__(self, name: str = "openai", probe_path: str | None = None) -> None:
        self.name = name
        self.probe_path = probe_path  # default: /models (OpenRouter: /key, its /models needs no key)

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _headers(call: Call) -> dict[str, str]:
        headers = dict(call.headers)
        if call.key is not None:
            headers["Authorization"] = f"Bearer {call.key}"
        return headers

    def _error(self, call: Call, status: int, body: Any, headers: Any) -> UpstreamError:
        exc = classify_error(status, body, headers, secret=call.key, prefix=self.name)
        exc.limits = learn.from_headers(headers, time.time())
        return exc

    @staticmethod
    def _learn(call: Call, headers: Any) -> None:
        """The quota limits an answer's rate-limit headers reveal, for the key manager."""
        call.learned.extend(learn.from_headers(headers, time.time()))

    def _json(self, call: Call, status: int, headers: Any, data: bytes) -> dict:
        if status != 200:
            raise self._error(call, status, data, headers)
        self._learn(call, headers)
        try:
            body = json.loads(data)
        except ValueError:
            raise UpstreamError(
                f"{self.name}: unreadable response body", outcome=TRANSIENT, status=502
            ) from None
        if not isinstance(body, dict):
            raise UpstreamError(f"{self.name}: unexpected response body", outcome=TRANSIENT, status=502)
        if isinstance(body.get("error"), dict) and "choices" not in body and "data" not in body:
            # OpenRouter and some proxies answer 200 with an error body
            raise self._error(call, _embedded_status(body["error"]), body, headers)
        return body

    def _send(self, method: str, call: Call, path: str, body: dict | None = None) -> dict:
        status, headers, data = http.request(
            method, call.base_url + path, headers=self._headers(call), body=body, timeouts=call.timeouts,
            transport=call.transport,
        )
        return self._json(call, status, headers, data)

    # -- Adapter protocol ----------------------------------------------------------------------------

    def chat(self, call: Call, req: dict) -> dict:
        body = {k: v for k, v in req.items() if k not in ("stream", "stream_options")}
        body["model"] = call.model
        answer = self._send("POST", call, "/chat/completions", body)
        if req.get("model"):
            answer["model"] = req["model"]
        return answer

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]:
        """Relay the upstream stream chunk by chunk (parsed dicts, model renamed); stop at [DONE]."""
        body = {**req, "model": call.model, "stream": True}
        client_model = req.get("model")
        resp = http.open_request(
            "POST",
            call.base_url + "/chat/completions",
            headers=self._headers(call),
            body=body,
            timeouts=call.timeouts, transport=call.transport,
        )
        try:
            if resp.status != 200:
                raise self._error(call, resp.status, http.read_error_body(resp), resp.headers)
            self._learn(call, resp.headers)
            yielded = finished = False
            for _event, data in http.iter_sse_data(resp.iter_lines()):
                if data.strip() == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise UpstreamError(
                        f"{self.name}: malformed stream event", outcome=TRANSIENT, status=502
                    ) from None
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    err_obj = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    err = self._error(call, _embedded_status(err_obj), chunk, None)
                    if yielded:  # contract: a failure after the first chunk is TRANSIENT
                        err.outcome = TRANSIENT
                    raise err
                if client_model and "model" in chunk:
                    chunk["model"] = client_model
                finished = finished or any(c.get("finish_reason") for c in chunk.get("choices") or [])
                yielded = True
                yield chunk
            if not finished:
                raise UpstreamError(
                    f"{self.name}: stream ended before it was finished", outcome=TRANSIENT, status=502
                )
        finally:
            resp.close()

    def embeddings(self, call: Call, req: dict) -> dict:
        answer = self._send("POST", call, "/embeddings", {**req, "model": call.model})
        if req.get("model"):
            answer["model"] = req["model"]
        return answer

    def probe(self, call: Call) -> None:
        path = self.probe_path or ("/key" if "openrouter.ai" in call.base_url else "/models")
        self._send("GET", call, path)
