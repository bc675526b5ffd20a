"""A finished ``Exchange`` as the stored transaction document: plain functions on plain data, run by the
ring's flusher (never on the request's path), and by the request log for ``logging.bodies``.

Redaction, in this order, for every body: the ``inspector.redact`` JSONPaths replace what they match with
``"[REDACTED]"`` (JSON bodies, and each event of a stream); every secret keyrelay knows (upstream keys,
client keys, the admin token, proxy passwords, the key this request presented) is replaced wherever it
appears; then the body is cut at ``max_body_bytes`` and marked (``truncated: true``, ``size`` the whole
length). Credential headers keep their name with the value ``"[REDACTED]"``; a ``key=`` query parameter
(Gemini's URL form) becomes ``key=[REDACTED]``. The finished document is scrubbed of every secret once
more as a whole.

Document (JSON)::

    {request_id, started_at (epoch s), model, client_id, route, key_id, status, outcome, stream,
     duration_ms, attempts: [...], client: {request, response, timings}}
    attempt: {n, provider, model, key_id, outcome, error, started_at, server_ip,
              request: {method, url, headers: [[name, value]], body},
              response: {status, headers, body, chunks?: [{time_ms, text}]},
              timings: {connect, send, wait, receive, total}}   (ms; connect -1 = a reused connection)
    body: {text, size, truncated, mime}
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from proxy.transforms import CREDENTIALS

if TYPE_CHECKING:
    from proxy.inspect.capture import AttemptTap, Exchange
    from proxy.inspect.settings import InspectorConfig
    from proxy.relay import Attempt, Trace

REDACTED = "[REDACTED]"
UNREDACTABLE = "[not stored: could not be redacted]"  # JSON that does not parse (cut while captured)
_KEYLIKE = re.compile(r"\b(?:sk-|gsk_|AIza)[-_A-Za-z0-9*.]{6,}")  # as proxy/providers/openai.py
_KEY_PARAM = re.compile(r"([?&](?:key|api_key|api-key|access_token)=)[^&#]*", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def safe_url(url: str, secrets: Iterable[str] = ()) -> str:
    return scrub(_KEY_PARAM.sub(r"\1" + REDACTED, url), secrets)


def safe_headers(headers: Any, secrets: Iterable[str]) -> list[list[str]]:
    """(name, value) pairs (or a mapping / Headers), credentials as "[REDACTED]", secrets scrubbed."""
    secrets = tuple(secrets)
    pairs = headers.items() if hasattr(headers, "items") else headers
    return [[name, REDACTED if name.lower() in CREDENTIALS else scrub(str(value), secrets)]
            for name, value in pairs]


def redact_json(doc: Any, paths: Sequence[Any]) -> Any:
    for path in paths:
        try:
            doc = path.update(doc, REDACTED)
        except Exception:  # a path that does not fit this document's shape redacts nothing here
            continue
    return doc


def body_text(raw: bytes | str | None, settings: InspectorConfig, secrets: Sequence[str],
              mime: str = "application/json") -> dict | None:
    """A stored body: JSON redacted by the configured paths, secrets scrubbed, cut and marked."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text and settings.redact_paths and text.lstrip()[:1] in ("{", "["):
        try:
            text = orjson.dumps(redact_json(orjson.loads(text), settings.redact_paths)).decode()
        except orjson.JSONDecodeError:  # never store what the redact paths could not be applied to
            return {"text": UNREDACTABLE, "size": len(text.encode()), "truncated": True, "mime": mime}
    text = scrub(text, secrets)
    return cut(text, settings.max_body_bytes, mime)


def cut(text: str, limit: int, mime: str) -> dict:
    data = text.encode()
    if len(data) <= limit:
        return {"text": text, "size": len(data), "truncated": False, "mime": mime}
    return {"text": data[:limit].decode("utf-8", "ignore"), "size": len(data), "truncated": True,
            "mime": mime}


def json_text(value: Any, settings: InspectorConfig) -> str:
    if settings.redact_paths:
        value = redact_json(orjson.loads(orjson.dumps(value)), settings.redact_paths)  # a copy
    return orjson.dumps(value).decode()


# ---------------------------------------------------------------------------------------------- streams


_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r?\n")


def sse_events(pieces: Sequence[tuple[float, bytes]], end: re.Pattern = _SSE_END) -> list[tuple[float, str]]:
    """Server-sent events (or, with ``_LINE_END``, NDJSON lines) from the body pieces as they arrived:
    (arrival of its last byte, text)."""
    events: list[tuple[float, str]] = []
    buf = b""
    for t, piece in pieces:
        buf += piece
        while True:
            m = end.search(buf)
            if m is None:
                break
            events.append((t, buf[: m.start()].decode("utf-8", "replace")))
            buf = buf[m.end():]
    if buf.strip():
        events.append((pieces[-1][0], buf.decode("utf-8", "replace")))
    return events


def _redact_event(text: str, settings: InspectorConfig) -> str:
    if not settings.redact_paths:
        return text
    lines = []
    for line in text.splitlines():
        if line.startswith(("data:", "{")):
            data = line[5:].strip() if line.startswith("data:") else line
            try:
                redacted = redact_json(orjson.loads(data), settings.redact_paths)
                line = ("data: " if line.startswith("data:") else "") + orjson.dumps(redacted).decode()
            except orjson.JSONDecodeError:
                if data[:1] in ("{", "["):
                    line = ("data: " if line.startswith("data:") else "") + UNREDACTABLE
        lines.append(line)
    return "\n".join(lines)


def stream_chunks(events: Sequence[tuple[float, str]], t0: float, settings: InspectorConfig,
                  secrets: Sequence[str]) -> tuple[list[dict], bool]:
    """(chunks with their arrival in ms after ``t0``, cut) within ``max_body_bytes`` all together."""
    out: list[dict] = []
    total = 0
    for t, text in events:
        text = scrub(_redact_event(text, settings), secrets)
        total += len(text.encode())
        if total > settings.max_body_bytes:
            return out, True
        out.append({"time_ms": round((t - t0) * 1000, 3), "text": text})
    return out, False


# ---------------------------------------------------------------------------------------------- documents


def _ms(a: float | None, b: float | None) -> float:
    return round(max(0.0, (b or 0.0) - (a or 0.0)) * 1000, 3) if a is not None and b is not None else 0.0


def attempt_timings(tap: AttemptTap, latency_ms: float | None) -> dict:
    """connect, send, wait (to the response head), receive (to the body's end) and their total, in ms."""
    t0 = tap.t0
    end = tap.t_end
    if end is None:  # failed before the body ended: the relay's latency bounds it
        end = t0 + (latency_ms or 0.0) / 1000
    points = [t0, tap.t_connected, tap.t_sent, tap.t_head, end]
    last = t0
    filled = []
    for p in points:  # a phase that never happened takes no time
        last = max(last, p) if p is not None else last
        filled.append(last)
    if filled[-1] < filled[-2]:
        filled[-1] = filled[-2]
    if tap.reused:  # no connect phase: taking the pooled connection counts as sending
        filled[1] = filled[0]
    connect = _ms(filled[0], filled[1])
    send, wait, receive = _ms(filled[1], filled[2]), _ms(filled[2], filled[3]), _ms(filled[3], filled[4])
    if tap.t_head is None:  # no answer: the time went into waiting for one
        wait, receive = round(wait + receive, 3), 0.0
    total = round(connect + send + wait + receive, 3)
    return {"connect": -1 if tap.reused else connect, "send": send, "wait": wait, "receive": receive,
            "total": total}


def _raw_request(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return headers, body


def attempt_doc(n: int, tap: AttemptTap, attempt: Attempt | None, settings: InspectorConfig,
                secrets: Sequence[str]) -> dict:
    headers, body = _raw_request(tap.raw)
    kind = tap.headers.get("content-type", "")
    ndjson = "ndjson" in kind  # Ollama streams one JSON object per line
    stream = ndjson or "text/event-stream" in kind or "alt=sse" in tap.url
    response: dict[str, Any] = {"status": tap.status, "headers": safe_headers(tap.headers.items(), secrets)}
    data = b"".join(p for _, p in tap.pieces)
    if stream and tap.status == 200:
        events = sse_events(tap.pieces, _LINE_END if ndjson else _SSE_END)
        chunks, cut_off = stream_chunks(events, tap.t0, settings, secrets)
        response["chunks"] = chunks
        text = ("\n" if ndjson else "\n\n").join(c["text"] for c in chunks)
        response["body"] = {"text": text, "size": len(data), "truncated": cut_off or tap.cut,
                            "mime": kind or "text/event-stream"}
    elif tap.status is not None:
        mime = tap.headers.get("content-type", "application/json")
        if tap.status >= 400:  # upstreams echo keys in errors, even masked ("sk-VKMIs***...wjh3")
            data = _KEYLIKE.sub(REDACTED, data.decode("utf-8", "replace")).encode()
        response["body"] = body_text(data, settings, secrets, mime)
        if tap.cut and response["body"] is not None:
            response["body"]["truncated"] = True
    return {
        "n": n, "provider": tap.target.provider, "model": tap.target.model, "key_id": tap.key_id,
        "outcome": attempt.outcome if attempt else None, "error": attempt.error if attempt else None,
        "started_at": tap.started_at, "server_ip": tap.server_ip,
        "request": {"method": tap.method, "url": safe_url(tap.url, secrets),
                    "headers": safe_headers(headers, secrets),
                    "body": body_text(body, settings, secrets) if body else None},
        "response": response,
        "timings": attempt_timings(tap, attempt.latency_ms if attempt else None),
    }


def client_doc(ex: Exchange, t_done: float, settings: InspectorConfig, secrets: Sequence[str]) -> dict:
    response: dict[str, Any] = {"status": ex.status, "headers": safe_headers(ex.response_headers, secrets)}
    if ex.stream:
        events = [(t, "data: " + json_text(item, settings)) for t, item in ex.chunks]
        chunks, cut_off = stream_chunks(events, ex.t0, settings, secrets)
        response["chunks"] = chunks
        text = "\n\n".join(c["text"] for c in chunks)
        response["body"] = {"text": text, "size": len(text.encode()), "truncated": cut_off or ex.chunks_cut,
                            "mime": "text/event-stream"}
    else:
        response["body"] = body_text(ex.response_body, settings, secrets)
    t_resp = ex.t_response if ex.t_response is not None else t_done
    wait, receive = _ms(ex.t0, t_resp), _ms(t_resp, t_done)
    return {
        "request": {"method": ex.method, "path": ex.path, "query": scrub(ex.query, secrets),
                    "headers": safe_headers(ex.client_headers, secrets),
                    "body": body_text(ex.body, settings, secrets) if ex.body else None},
        "response": response,
        "timings": {"send": 0.0, "wait": wait, "receive": receive, "total": round(wait + receive, 3)},
    }


def transaction(ex: Exchange, trace: Trace | None, t_done: float, settings: InspectorConfig,
                secrets: Sequence[str]) -> dict:
    """The stored document of one exchange; ``secrets`` (longest first) include the presented client key."""
    attempts = list(trace.attempts) if trace else []
    taps = ex.attempts
    docs = [attempt_doc(i + 1, tap, attempts[i] if i < len(attempts) else None, settings, secrets)
            for i, tap in enumerate(taps)]
    route = trace.route_name if trace else None
    return {
        "request_id": ex.request_id, "started_at": ex.started_at, "model": ex.model,
        "client_id": ex.client_id,
        "route": route, "key_id": trace.key_id if trace else None, "status": ex.status,
        "outcome": attempts[-1].outcome if attempts else None, "stream": ex.stream,
        "duration_ms": _ms(ex.t0, t_done), "attempts": docs,
        "client": client_doc(ex, t_done, settings, secrets),
    }


def encode(doc: dict, secrets: Sequence[str]) -> bytes:
    """The stored bytes of a document: compact JSON, every secret scrubbed once more."""
    data = orjson.dumps(doc)
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), REDACTED.encode())
    return data
