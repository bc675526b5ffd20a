"""Adapter for the native Gemini API (generativelanguage.googleapis.com/v1beta).

HTTP only; every translation lives in gemini_translate. The key goes in the ``x-goog-api-key`` header,
never in the URL, so it cannot leak through URLs in logs or errors. Every URL is
``{base_url}/models/<one percent-encoded segment>:<method>`` (or the fixed ``{base_url}/models`` for the
probe): ``gemini_translate.model_path`` refuses a model name that would make it anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson

from proxy.errors import CLIENT, TRANSIENT, UpstreamError
from proxy.providers import gemini_translate as gt
from proxy.providers import http
from proxy.providers import toolkit as tk
from proxy.providers.base import Call


class GeminiAdapter:
    """Implements proxy.providers.base.Adapter for Gemini's generateContent family."""

    name = "gemini"

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _headers(call: Call) -> dict[str, str]:
        headers = dict(call.headers)
        if call.key:
            headers["x-goog-api-key"] = call.key
        return headers

    @staticmethod
    def _url(call: Call, method: str, query: dict[str, Any] | None = None) -> str:
        url = f"{call.base_url}/{gt.model_path(call.model)}{method}"
        return url + ("?" + urlencode(query) if query else "")

    @staticmethod
    def _json(call: Call, status: int, headers: Any, data: bytes) -> dict:
        if status != 200:
            raise gt.classify_error(status, data, headers, secret=call.key)
        try:
            body = orjson.loads(data)
        except ValueError:
            raise UpstreamError(
                gt.PREFIX + "unreadable response body", outcome=TRANSIENT, status=502
            ) from None
        if isinstance(body, dict) and "error" in body:
            raise gt.classify_error(_embedded_status(body), body, headers, secret=call.key)
        if not isinstance(body, dict):
            raise UpstreamError(gt.PREFIX + "unexpected response body", outcome=TRANSIENT, status=502)
        return body

    def _post(self, call: Call, method: str, body: dict) -> dict:
        status, headers, data = http.request(
            "POST", self._url(call, method), headers=self._headers(call), body=body, timeouts=call.timeouts,
            transport=call.transport,
        )
        return self._json(call, status, headers, data)

    def _get(self, call: Call, url: str) -> dict:
        status, headers, data = http.request("GET", url, headers=self._headers(call), timeouts=call.timeouts,
                                             transport=call.transport)
        return self._json(call, status, headers, data)

    # -- Adapter protocol ----------------------------------------------------------------------------

    def chat(self, call: Call, req: dict) -> dict:
        body = self._post(call, ":generateContent", gt.to_gemini_request(req, call.model))
        return gt.from_gemini_response(body, req.get("model") or call.model)

    def chat_stream(self, call: Call, req: dict) -> Iterator[dict]:
        """Generator of OpenAI chunks; nothing is sent before the first next()."""
        body = gt.to_gemini_request(req, call.model)
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        resp = http.open_request(
            "POST",
            self._url(call, ":streamGenerateContent", {"alt": "sse"}),
            headers=self._headers(call),
            body=body,
            timeouts=call.timeouts, transport=call.transport,
        )
        try:
            if resp.status != 200:
                error_body = http.read_error_body(resp)
                raise gt.classify_error(resp.status, error_body, resp.headers, secret=call.key)
            tr = gt.StreamTranslator(req.get("model") or call.model)
            yielded = False
            for _event, data in http.iter_sse_data(resp.iter_lines()):
                event = _parse_event(data)
                if "error" in event:
                    err = gt.classify_error(_embedded_status(event), event, None, secret=call.key)
                    if yielded:  # contract: a failure after the first chunk is TRANSIENT
                        err.outcome = TRANSIENT
                    raise err
                for chunk in tr.feed(event):
                    yielded = True
                    yield chunk
            if tr.events == 0:
                raise UpstreamError(gt.PREFIX + "empty stream", outcome=TRANSIENT, status=502)
            yield from tr.finish()
            if include_usage:
                yield tr.usage_chunk()
        finally:
            resp.close()

    def embeddings(self, call: Call, req: dict) -> dict:
        method, body = gt.to_gemini_embed(req, call.model)
        answer = self._post(call, method, body)
        return gt.from_gemini_embed(answer, req.get("model") or call.model, req.get("encoding_format"))

    def probe(self, call: Call) -> None:
        self._get(call, f"{call.base_url}/models?pageSize=1")

    # -- Gemini clients' own bodies (the Gemini-native endpoint) --------------------------------------

    speaks_gemini = True

    def native(self, call: Call, method: str, body: dict) -> tuple[dict, dict]:
        """POST a Gemini client's body as it is to ``models/<call.model>:<method>``; (the answer as the
        upstream sent it, an OpenAI-shaped view of its usage for the relay's accounting)."""
        answer = self._post(call, ":" + _native_method(method), body)
        meta = answer.get("usageMetadata")
        return answer, ({"usage": gt.usage_from_metadata(meta)} if isinstance(meta, dict) else {})

    def native_stream(self, call: Call, body: dict) -> Iterator[tuple[str, dict]]:
        """streamGenerateContent (SSE) with a Gemini client's body: yields each event's JSON text as the
        upstream sent it, with a view of it (its text and usage) for the relay's accounting. Nothing is
        sent before the first next(); an embedded error raises like ``chat_stream``."""
        resp = http.open_request("POST", self._url(call, ":streamGenerateContent", {"alt": "sse"}),
                                 headers=self._headers(call), body=body, timeouts=call.timeouts,
                                 transport=call.transport)
        try:
            if resp.status != 200:
                error_body = http.read_error_body(resp)
                raise gt.classify_error(resp.status, error_body, resp.headers, secret=call.key)
            yielded = False
            for _event, data in http.iter_sse_data(resp.iter_lines()):
                event = _parse_event(data)
                if "error" in event:
                    err = gt.classify_error(_embedded_status(event), event, None, secret=call.key)
                    if yielded:
                        err.outcome = TRANSIENT
                    raise err
                yielded = True
                yield data, _view(event)
            if not yielded:
                raise UpstreamError(gt.PREFIX + "empty stream", outcome=TRANSIENT, status=502)
        finally:
            resp.close()


_NATIVE_METHODS = ("generateContent", "countTokens", "embedContent", "batchEmbedContents")


def _native_method(method: str) -> str:
    if method not in _NATIVE_METHODS:  # a fixed set: the client never picks another upstream path
        raise UpstreamError(f"{gt.PREFIX}unknown method {method[:40]!r}", outcome=CLIENT, status=400)
    return method


def _view(event: dict) -> dict:
    """A native stream event as the relay counts it: its answer text and its usage (OpenAI shape)."""
    parts = [p for c in event.get("candidates") or [] if isinstance(c, dict)
             for p in (c.get("content") or {}).get("parts") or [] if isinstance(p, dict)]
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
    view: dict = {"choices": [{"index": 0, "delta": {"content": text}}]}
    meta = event.get("usageMetadata")
    if isinstance(meta, dict):
        view["usage"] = gt.usage_from_metadata(meta)
    return view


def _embedded_status(obj: Any) -> int:
    return tk.embedded_status(gt.parse_error_envelope(obj).get("code"))


def _parse_event(data: str) -> dict:
    try:
        event = orjson.loads(data)
    except ValueError:
        raise UpstreamError(gt.PREFIX + "malformed stream event", outcome=TRANSIENT, status=502) from None
    if isinstance(event, list):  # error bodies sometimes come wrapped in an array
        event = event[0] if event else {}
    if not isinstance(event, dict):
        raise UpstreamError(gt.PREFIX + "malformed stream event", outcome=TRANSIENT, status=502)
    return event
