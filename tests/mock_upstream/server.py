"""The mock upstream HTTP server: four wire formats, scripted misbehaviour, recorded calls.

In-process (pytest): ``MockUpstream().start()`` runs a ThreadingHTTPServer (HTTP/1.1 keep-alive, chunked
streams flushed per event) on a daemon thread. Standalone: ``python -m tests.mock_upstream.server --port N``
runs the same server under gevent (monkey-patched before anything imports sockets) for thousands of
concurrent streams; drive it over HTTP (/_mock/*) or with ``tests.mock_upstream.client.RemoteMock``.
"""
# ruff: noqa: E402
from __future__ import annotations

import sys

if __name__ == "__main__" and "--threads" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import collections
import json
import re
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.mock_upstream import anthropic_messages as anthropic
from tests.mock_upstream import errors
from tests.mock_upstream import gemini_native as gemini
from tests.mock_upstream import ollama_native as ollama
from tests.mock_upstream import openai_compat as openai
from tests.mock_upstream.core import count_tokens, digest, embedding, load_fixture, plan_reply
from tests.mock_upstream.quota import COUNTED_OPS, QuotaLimiter
from tests.mock_upstream.script import Behaviour, RuleTable, as_behaviour, normalize_model

ANY: Any = object()  # filter sentinel: "any value" (None is a real key value for Ollama)
Frames = list[tuple[bytes, bool]]  # (bytes on the wire, counts as a content chunk)

_GEMINI_OP = re.compile(r"^/(?:v1beta|v1)/models/([^/:]+):(\w+)$")
_GEMINI_MODEL = re.compile(r"^/(?:v1beta|v1)/models/([^/:]+)$")
_OPENAI = re.compile(r"^(?:/v1beta/openai|/v1)/(chat/completions|embeddings|models)$")


_UNREADABLE = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class _Stop(Exception):
    """The server is stopping (or a hold timed out): abandon this response."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 2048  # listen backlog: benchmarks open ~1000 connections at once

    def __init__(self, addr: tuple[str, int], mock: MockUpstream) -> None:
        self.mock = mock
        self.open_conns: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse-DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        with self.conn_lock:
            self.open_conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # noqa: ANN001
        with self.conn_lock:
            self.open_conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # client went away etc.; nothing useful to print in test output

    def close_all(self) -> None:
        with self.conn_lock:
            conns = list(self.open_conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MockUpstream:
    """A scriptable fake of the Gemini, OpenAI-compatible, Anthropic and Ollama APIs on 127.0.0.1.

    Base URLs: ``url + "/v1beta"`` (Gemini), ``url + "/v1"`` (OpenAI, Anthropic), ``url`` (Ollama).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0,
                 chunk_delay: float = 0.0, hang_limit: float = 60.0, hold_timeout: float = 30.0,
                 max_calls: int = 100_000, record: bool = True) -> None:
        self.host, self._port = host, port
        self.latency = latency  # seconds before every answer
        self.chunk_delay = chunk_delay  # default pause between stream content chunks
        self.hang_limit = hang_limit
        self.hold_timeout = hold_timeout
        self.record = record
        self.rules = RuleTable()
        self.quota: QuotaLimiter | None = None  # per-key request quotas with real-shaped 429s (quota.py)
        self._calls: collections.deque[dict] = collections.deque(maxlen=max_calls)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._seq = 0
        self._events: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> MockUpstream:
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mock-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for ev in self._events.values():
                ev.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("mock upstream is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- scripting ---------------------------------------------------------------------------------
    def script(self, key: str | None = None, model: str | None = None, behaviour: Any = None, *,
               dialect: str | None = None, times: int | None = None) -> int:
        """Make matching requests (None = any) behave as `behaviour` (a Behaviour, list, or dict).

        Every matching rule applies (newer ones win on conflicts); each match uses one of `times`.
        """
        return self.rules.add(as_behaviour(behaviour), key=key, model=model, dialect=dialect, times=times)

    def clear(self, calls: bool = True) -> None:
        """Forget all rules (and, by default, the recorded calls); named hold events are reset."""
        self.rules.clear()
        with self._lock:
            if calls:
                self._calls.clear()
            for ev in self._events.values():
                ev.set()
            self._events.clear()

    def event(self, name: str) -> threading.Event:
        """The named event a ``hold("name")`` behaviour waits for."""
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        self.event(name).set()

    # -- recorded calls ----------------------------------------------------------------------------
    @property
    def calls(self) -> list[dict]:
        with self._lock:
            return list(self._calls)

    def find(self, key: Any = ANY, model: Any = ANY, dialect: Any = ANY, path: Any = ANY) -> list[dict]:
        return [c for c in self.calls
                if (key is ANY or c["key"] == key) and (model is ANY or c["model"] == normalize_model(model))
                and (dialect is ANY or c["dialect"] == dialect) and (path is ANY or c["path"] == path)]

    def count(self, key: Any = ANY, model: Any = ANY, dialect: Any = ANY, path: Any = ANY) -> int:
        return len(self.find(key=key, model=model, dialect=dialect, path=path))

    def wait_for_calls(self, n: int, timeout: float = 5.0, **filters: Any) -> list[dict]:
        """Block until at least n matching calls were recorded; returns them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._calls if _matches(c, filters)]
                if len(found) >= n:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} calls matching {sorted(filters)}, got {len(found)}")
                self._cond.wait(left)

    def _record(self, call: dict) -> None:
        with self._cond:
            self._seq += 1
            call["id"] = self._seq
            if self.record:
                self._calls.append(call)
            self._cond.notify_all()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Stop()

    def _wait_hold(self, hold: Any) -> None:
        if isinstance(hold, (int, float)) and not isinstance(hold, bool):
            self._sleep(float(hold))
            return
        ev = self.event(hold) if isinstance(hold, str) else hold
        deadline = time.monotonic() + self.hold_timeout
        while not ev.wait(0.05):
            if self._stopping.is_set() or time.monotonic() > deadline:
                raise _Stop()
        if self._stopping.is_set():
            raise _Stop()


def _matches(call: dict, filters: dict) -> bool:
    for name, want in filters.items():
        have = call.get(name)
        if name == "model":
            want = normalize_model(want)
        if have != want:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1"
    sys_version = ""
    disable_nagle_algorithm = True  # every SSE event leaves immediately
    timeout = 600  # idle keep-alive connections
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    # -- request plumbing --------------------------------------------------------------------------
    @property
    def mock(self) -> MockUpstream:
        return self.server.mock

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        raw = self._read_body()
        try:
            if path.startswith("/_mock/"):
                self._control(path, query, raw)
                return
            route = self._route(path, query)
            if route is None:
                self._send_json(404, {"error": {"code": 404, "message": f"no mock route for {self.command} "
                                                f"{path}", "status": "NOT_FOUND"}})
                return
            self._serve(route, path, query, raw)
        except (_Stop, OSError):  # stopping, hold timed out, or the client went away
            self.close_connection = True

    def _route(self, path: str, query: dict) -> tuple[str, str, str | None] | None:
        """(dialect, operation, model from the path)."""
        m = _GEMINI_OP.match(path)
        if m and self.command == "POST":
            return "gemini", m.group(2), m.group(1)
        if path in ("/v1beta/models", "/v1/models") and (path == "/v1beta/models" or "key" in query
                                                          or "x-goog-api-key" in self.headers):
            return ("gemini", "listModels", None) if self.command == "GET" else None
        m = _GEMINI_MODEL.match(path)
        if m and self.command == "GET" and path.startswith("/v1beta/"):
            return "gemini", "getModel", m.group(1)
        m = _OPENAI.match(path)
        if m:
            op = m.group(1)
            if op == "models":
                if self.command != "GET":
                    return None
                if "anthropic-version" in self.headers and "authorization" not in self.headers:
                    return "anthropic", "models", None
            return "openai", op, None
        if path in ("/v1/messages", "/v1/messages/count_tokens") and self.command == "POST":
            return "anthropic", path.rsplit("/", 1)[-1], None
        if path in ("/api/chat", "/api/embed") and self.command == "POST":
            return "ollama", path.rsplit("/", 1)[-1], None
        if path in ("/api/tags", "/api/version") and self.command == "GET":
            return "ollama", path.rsplit("/", 1)[-1], None
        return None

    def _key(self, dialect: str, query: dict) -> str | None:
        h = self.headers
        bearer = h.get("Authorization", "")
        bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
        if dialect == "gemini":
            return h.get("x-goog-api-key") or query.get("key")
        if dialect == "anthropic":
            return h.get("x-api-key") or bearer
        return bearer or None

    # -- the mock proper ---------------------------------------------------------------------------
    def _serve(self, route: tuple[str, str, str | None], path: str, query: dict, raw: bytes) -> None:
        dialect, op, model = route
        mock = self.mock
        try:
            body = json.loads(raw) if raw else {}
            bad_json = not isinstance(body, dict)
        except ValueError:
            body, bad_json = {}, True
        if model is None:
            model = body.get("model") if isinstance(body, dict) else None
        model = normalize_model(model) if isinstance(model, str) else None
        stream = _is_stream(dialect, op, query, body)
        key = self._key(dialect, query)
        call = {"dialect": dialect, "method": self.command, "path": path, "query": query, "op": op,
                "model": model, "key": key, "stream": stream, "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()}, "time": time.time(),
                "status": None}
        unreadable = None  # a body the mock cannot make sense of: real upstreams answer 400, not a crash
        if dialect == "gemini" and isinstance(body, dict):
            try:
                call["thought_signatures"] = gemini.history_signatures(model or "", body)
            except _UNREADABLE as exc:
                call["thought_signatures"], unreadable = [], exc
        mock._record(call)
        b = mock.rules.resolve(key, model, dialect)

        mock._sleep(mock.latency + (b.delay or 0.0))
        if b.hang is not None:
            mock._sleep(min(b.hang, mock.hang_limit))
            raise _Stop()
        if b.reset_after == 0:
            call["status"] = "reset"
            self._reset()
            return
        if dialect != "ollama" and not key:
            status, err = errors.missing_key_error(dialect)
            return self._error(call, dialect, status, err, b)
        if b.invalid_key:
            status, err = errors.invalid_key_error(dialect)
            return self._error(call, dialect, status, err, b)
        if mock.quota is not None and op in COUNTED_OPS and not (b.status and b.status >= 400):
            refusal = mock.quota.check(key, model or "", dialect)
            if refusal is not None:
                status, err, headers = refusal
                return self._error(call, dialect, status, err, b + Behaviour(headers={**(b.headers or {}),
                                                                                        **headers}))
            extra = mock.quota.headers(key, model or "", dialect)
            if extra:
                b = b + Behaviour(headers={**(b.headers or {}), **extra})
        if b.status is not None and b.status >= 400:
            err = b.body if b.body is not None else errors.default_error(
                dialect, b.status, model=model or "", retry_delay=b.retry_delay)
            if isinstance(err, dict) and b.retry_delay is not None:
                err = errors.with_retry_delay(err, b.retry_delay)
            return self._error(call, dialect, b.status, err, b)
        if bad_json:
            return self._error(call, dialect, 400, _bad_request(dialect, "Invalid JSON payload received."), b)
        if b.replay:
            return self._replay(call, b)
        try:
            if unreadable is not None:
                raise unreadable
            result = self._answer(dialect, op, model or "", body, query, b, call)
        except _UNREADABLE as exc:
            message = f"Invalid payload: {type(exc).__name__}: {exc}"
            return self._error(call, dialect, 400, _bad_request(dialect, message), b)
        if result is None:
            return
        kind, status, payload = result
        call["status"] = status
        if kind == "json":
            self._send_json(status, payload, b)
        else:
            self._send_stream(payload, _STREAM_TYPES[dialect], b)

    def _answer(self, dialect: str, op: str, model: str, body: dict, query: dict, b: Behaviour,
                call: dict) -> tuple[str, int, Any] | None:
        """("json", status, obj) or ("stream", 200, frames); None when an error was already sent."""
        if dialect == "gemini":
            if op in ("generateContent", "streamGenerateContent"):
                unsigned = any(not s["signature"] for s in call["thought_signatures"])
                if b.require_thought_signature and unsigned:
                    msg = ("Function call is missing a thought_signature in functionCall parts. This is "
                           "required for tools to work correctly.")
                    self._error(call, dialect, 400, errors.gemini_error(400, msg), b)
                    return None
                r = plan_reply(gemini.parse_prompt(model, body), b.text)
                if op == "generateContent":
                    return "json", 200, gemini.generate(model, r)
                if query.get("alt") != "sse":
                    return "json", 200, gemini.stream_chunks(model, r, b.chunks)
                return "stream", 200, gemini.stream_frames(model, r, b.chunks)
            if op == "embedContent":
                return "json", 200, gemini.embed(body)
            if op == "batchEmbedContents":
                status, out = gemini.batch_embed(model, body)
                return "json", status, out if status == 200 else errors.gemini_error(status, out)
            if op == "countTokens":
                return "json", 200, {"totalTokens": gemini.parse_prompt(model, body).prompt_tokens}
            if op == "listModels":
                size = query.get("pageSize")
                status, out = gemini.list_models(int(size) if size and size.isdigit() else None,
                                                 query.get("pageToken"))
                return "json", status, out if status == 200 else errors.gemini_error(status, out)
            if op == "getModel":
                info = gemini.model_info(model)
                return ("json", 200, info) if info else ("json", 404, errors.gemini_error(404, model=model))
            return "json", 404, errors.gemini_error(404, f"Method {op} not found.")
        if dialect == "openai":
            if op == "chat/completions":
                r = plan_reply(openai.parse_prompt(model, body), b.text)
                if not body.get("stream"):
                    return "json", 200, openai.completion(model, r)
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return "stream", 200, openai.stream_frames(model, r, b.chunks, usage)
            if op == "embeddings":
                return "json", 200, openai.embeddings(model, body)
            return "json", 200, openai.list_models()
        if dialect == "anthropic":
            if op == "models":
                return "json", 200, anthropic.list_models()
            if "anthropic-version" not in self.headers:
                self._error(call, dialect, 400, errors.anthropic_error(
                    400, "anthropic-version: header is required"), b)
                return None
            missing = anthropic.missing_field(body) if op == "messages" else None
            if missing:
                self._error(call, dialect, 400, errors.anthropic_error(400, f"{missing}: Field required"), b)
                return None
            p = anthropic.parse_prompt(model, body)
            if op == "count_tokens":
                return "json", 200, {"input_tokens": p.prompt_tokens}
            r = plan_reply(p, b.text)
            if body.get("stream"):
                return "stream", 200, anthropic.stream_frames(model, r, b.chunks)
            return "json", 200, anthropic.message(model, r)
        if op == "tags":
            return "json", 200, ollama.tags()
        if op == "version":
            return "json", 200, {"version": "0.5.7"}
        if op == "embed":
            inputs = body.get("input")
            texts = inputs if isinstance(inputs, list) else [inputs or ""]
            return "json", 200, {"model": model, "embeddings": [embedding(str(t)) for t in texts],
                                 "prompt_eval_count": sum(count_tokens(str(t)) for t in texts)}
        r = plan_reply(ollama.parse_prompt(model, body), b.text)
        if body.get("stream", True):
            return "stream", 200, ollama.stream_frames(model, r, b.chunks)
        return "json", 200, ollama.chat(model, r)

    # -- writing -----------------------------------------------------------------------------------
    def _error(self, call: dict, dialect: str, status: int, body: Any, b: Behaviour) -> None:
        call["status"] = status
        headers = {}
        if dialect == "anthropic":
            headers["request-id"] = "req_" + digest("req", call.get("id"))[:24]
            if status == 429:
                headers["retry-after"] = "1"
        headers.update(b.headers or {})
        self._send_json(status, body, b, headers)

    def _send_json(self, status: int, body: Any, b: Behaviour | None = None,
                   headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body, indent=2 if isinstance(body, dict) and "error" in body else None).encode()
            ctype = "application/json; charset=UTF-8"
        else:
            data = body.encode() if isinstance(body, str) else bytes(body)
            ctype = "text/plain; charset=UTF-8"
        extra = headers if headers is not None else (b.headers if b is not None else None)
        hdrs = {"Content-Type": ctype, **(extra or {})}
        cut = b.reset_after if b is not None and b.reset_after else None
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self._reset()
            return
        self.wfile.write(data)

    def _send_stream(self, frames: Frames, content_type: str, b: Behaviour, status: int = 200) -> None:
        mock = self.mock
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (b.headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        gap = b.chunk_delay if b.chunk_delay is not None else mock.chunk_delay
        sent = 0
        for data, is_content in frames:
            if is_content and sent and gap:
                mock._sleep(gap)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if not is_content:
                continue
            sent += 1
            if b.reset_after is not None and sent >= b.reset_after:
                self._reset()
                return
            if b.hold is not None and sent == b.hold_after:
                mock._wait_hold(b.hold)
        if b.reset_after is not None:  # more chunks asked for than exist: still no clean end
            self._reset()
            return
        self.wfile.write(b"0\r\n\r\n")

    def _replay(self, call: dict, b: Behaviour) -> None:
        data = load_fixture(b.replay)
        status = b.status or 200
        call["status"] = status
        if not b.replay.endswith(".sse"):
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        events = re.findall(rb".+?(?:\r\n\r\n|\n\n|\r\r|\Z)", data, re.S)
        frames = [(e, True) for e in events if e.strip()]
        self._send_stream(frames, "text/event-stream", b, status)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST: the client sees a broken stream, not a clean end."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop the makefile reference so close() really closes the fd
            self.connection.close()
        except OSError:
            pass

    # -- HTTP control ------------------------------------------------------------------------------
    def _control(self, path: str, query: dict, raw: bytes) -> None:
        mock = self.mock
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._send_json(400, {"error": "invalid JSON"})
        if path == "/_mock/health":
            return self._send_json(200, {"ok": True})
        if path == "/_mock/calls" and self.command == "GET":
            filters = {k: v for k, v in query.items() if k in ("key", "model", "dialect", "path")}
            calls = [c for c in mock.calls if _matches(c, filters)]
            return self._send_json(200, {"calls": calls})
        if path == "/_mock/rules" and self.command == "GET":
            return self._send_json(200, {"rules": mock.rules.snapshot()})
        if self.command != "POST":
            return self._send_json(405, {"error": "use POST"})
        if path == "/_mock/script":
            try:
                rid = mock.script(body.get("key"), body.get("model"), body.get("behaviour"),
                                  dialect=body.get("dialect"), times=body.get("times"))
            except (TypeError, ValueError) as exc:
                return self._send_json(400, {"error": str(exc)})
            return self._send_json(200, {"id": rid})
        if path == "/_mock/clear":
            mock.clear(calls=body.get("calls", True))
            return self._send_json(200, {"ok": True})
        if path == "/_mock/release":
            mock.release(str(body.get("name")))
            return self._send_json(200, {"ok": True})
        return self._send_json(404, {"error": f"unknown control path {path}"})


_STREAM_TYPES = {"gemini": "text/event-stream", "openai": "text/event-stream",
                 "anthropic": "text/event-stream; charset=utf-8", "ollama": "application/x-ndjson"}


def _is_stream(dialect: str, op: str, query: dict, body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if dialect == "gemini":
        return op == "streamGenerateContent"
    if dialect == "ollama":
        return op == "chat" and bool(body.get("stream", True))
    return bool(body.get("stream"))


def _bad_request(dialect: str, message: str) -> dict:
    if dialect == "gemini":
        return errors.gemini_error(400, message)
    if dialect == "openai":
        return errors.openai_error(400, message)
    if dialect == "anthropic":
        return errors.anthropic_error(400, message)
    return errors.ollama_error(400, message)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the keyrelay mock upstream standalone.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between stream chunks")
    ap.add_argument("--no-record", action="store_true", help="do not keep calls (long benchmarks)")
    ap.add_argument("--threads", action="store_true", help="plain threads instead of gevent")
    args = ap.parse_args(argv)
    mock = MockUpstream(args.host, args.port, latency=args.latency_ms / 1000,
                        chunk_delay=args.chunk_delay_ms / 1000, record=not args.no_record)
    mock._server = _Server((mock.host, mock._port), mock)
    print(f"mock-upstream listening on {mock.url}", flush=True)
    try:
        mock._server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        mock._server.server_close()


if __name__ == "__main__":
    main()
