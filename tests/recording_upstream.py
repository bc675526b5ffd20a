"""A tiny HTTP server on 127.0.0.1 that records every request and answers each with one canned reply.

For tests that must see exactly what keyrelay sent (method, path with query, body) or need one fixed
answer; the scriptable mock upstream (tests/mock_upstream) is for everything that speaks a dialect.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingUpstream:
    def __init__(self, status: int = 404, body: bytes | dict = b'{"error": {"message": "not found"}}',
                 content_type: str = "application/json") -> None:
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path + query, body)
        self.headers: list[dict[str, str]] = []  # each request's headers (names lower-cased)
        self.answer(status, body, content_type)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append((self.command, self.path, body))
                upstream.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, kind, payload = upstream.reply
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def answer(self, status: int, body: bytes | dict, content_type: str = "application/json") -> None:
        """Reply to every later request with this."""
        self.reply = (status, content_type, body if isinstance(body, bytes) else json.dumps(body).encode())

    @property
    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
