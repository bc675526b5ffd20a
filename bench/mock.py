"""A lean benchmark upstream: raw HTTP/1.1 keep-alive on a gevent StreamServer, canned answers.

Speaks just enough of two dialects for the benchmark: Gemini ``:generateContent`` and
``:streamGenerateContent?alt=sse`` (plus ``GET .../models`` for key probes) and OpenAI
``/v1/chat/completions`` (JSON or SSE). Answers are pre-encoded bytes, so a request costs a read, a
header scan and a write (~30-40 us); tests/mock_upstream (BaseHTTPRequestHandler, per-call recording and
rule matching) was measured ~8x slower per request and would be the bottleneck at >1,000 req/s.

Stream content chunk ``i`` carries the text ``kr-chunk-<i>`` so the load driver can time each chunk's
arrival in either dialect. Run: ``python -m bench.mock --port 0 [--latency-ms X] [--chunks N]
[--chunk-gap-ms G]``; the first stdout line is ``bench-mock listening on http://127.0.0.1:PORT``.
"""

# ruff: noqa: E402
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import json
import socket

import gevent
from gevent.server import StreamServer

_CANDIDATE_TAIL = {"finishReason": "STOP", "index": 0}
_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 24, "totalTokenCount": 36}


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def gemini_answer(text: str) -> bytes:
    return _json(
        {
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, **_CANDIDATE_TAIL}],
            "usageMetadata": _USAGE,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "bench-response-0001",
        }
    )


def gemini_events(chunks: int) -> list[bytes]:
    out = []
    for i in range(chunks):
        cand: dict = {"content": {"parts": [{"text": f"kr-chunk-{i} "}], "role": "model"}, "index": 0}
        event: dict = {"candidates": [cand], "modelVersion": "gemini-2.5-flash", "responseId": "bench-r1"}
        if i == chunks - 1:
            cand["finishReason"] = "STOP"
            event["usageMetadata"] = _USAGE
        out.append(b"data: " + _json(event) + b"\r\n\r\n")
    return out


def openai_answer(text: str) -> bytes:
    return _json(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36},
        }
    )


def openai_events(chunks: int) -> list[bytes]:
    base = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
    }
    out = []
    for i in range(chunks):
        delta = (
            {"role": "assistant", "content": f"kr-chunk-{i} "} if i == 0 else {"content": f"kr-chunk-{i} "}
        )
        finish = "stop" if i == chunks - 1 else None
        out.append(
            b"data: "
            + _json({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + b"\n\n"
        )
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36},
    }
    out.append(b"data: " + _json(usage) + b"\n\ndata: [DONE]\n\n")
    return out


_TEXT = "The quick brown fox jumps over the lazy dog. " * 4


def _response(status: str, body: bytes, ctype: bytes = b"application/json; charset=UTF-8") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        ctype,
        len(body),
        body,
    )


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class BenchMock:
    def __init__(self, latency_s: float = 0.0, chunks: int = 10, chunk_gap_s: float = 0.2) -> None:
        self.latency = latency_s
        self.gap = chunk_gap_s
        self.gemini_json = _response("200 OK", gemini_answer(_TEXT))
        self.openai_json = _response("200 OK", openai_answer(_TEXT))
        self.models = _response("200 OK", _json({"models": [{"name": "models/gemini-2.5-flash"}]}))
        self.not_found = _response(
            "404 Not Found", _json({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
        )
        self.gemini_stream = [b"%x\r\n%s\r\n" % (len(e), e) for e in gemini_events(chunks)]
        self.openai_stream = [b"%x\r\n%s\r\n" % (len(e), e) for e in openai_events(chunks)]

    def handle(self, sock, _addr) -> None:  # noqa: ANN001
        buf = b""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                lower = head.lower()
                i = lower.find(b"\r\ncontent-length:")
                if i != -1:
                    j = lower.find(b"\r\n", i + 2)
                    length = int(lower[i + 17 : j if j != -1 else None])
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                target = head[: head.find(b"\r\n")].split(b" ")[1]
                if self.latency:
                    gevent.sleep(self.latency)
                self._answer(sock, target, body)
        except OSError:
            return
        finally:
            sock.close()

    def _answer(self, sock, target: bytes, body: bytes) -> None:  # noqa: ANN001
        if target.endswith(b":generateContent"):
            sock.sendall(self.gemini_json)
        elif b":streamGenerateContent" in target:
            self._stream(sock, self.gemini_stream)
        elif target.endswith(b"/chat/completions"):
            if b'"stream":true' in body.replace(b" ", b""):
                self._stream(sock, self.openai_stream)
            else:
                sock.sendall(self.openai_json)
        elif b"/models" in target:
            sock.sendall(self.models)
        else:
            sock.sendall(self.not_found)

    def _stream(self, sock, frames: list[bytes]) -> None:  # noqa: ANN001
        sock.sendall(_STREAM_HEAD + frames[0])
        for frame in frames[1:]:
            if self.gap:
                gevent.sleep(self.gap)
            sock.sendall(frame)
        sock.sendall(b"0\r\n\r\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--chunk-gap-ms", type=float, default=200.0)
    args = ap.parse_args(argv)
    mock = BenchMock(args.latency_ms / 1000, max(1, args.chunks), args.chunk_gap_ms / 1000)
    server = StreamServer(("127.0.0.1", args.port), mock.handle, backlog=4096)
    server.init_socket()
    print(f"bench-mock listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
