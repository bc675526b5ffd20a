"""A mock model catalog on 127.0.0.1 serving both formats, built from the recorded excerpts:
models.dev at ``/api.json`` and OpenRouter at ``/api/v1/models`` (``urls``), with ETag / Last-Modified
(304 on a matching If-None-Match or If-Modified-Since), scriptable failures and delays, and per-path
counts of requests, 304s and the most requests in flight at once."""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness import FIXTURES

PATHS = {"models.dev": "/api.json", "openrouter": "/api/v1/models"}
LAST_MODIFIED = "Tue, 12 May 2026 19:10:11 GMT"


def fixture(source: str) -> Any:
    name = "modelsdev-api-excerpt.json" if source == "models.dev" else "openrouter-models-excerpt.json"
    return json.loads((FIXTURES / name).read_text())


class MockCatalog:
    def __init__(self) -> None:
        self.docs = {source: fixture(source) for source in PATHS}
        self.status: dict[str, int] = {}  # source -> HTTP status to answer instead of the document
        self.delay_s = 0.0
        self.requests: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def urls(self) -> dict[str, str]:
        assert self._server is not None
        return {s: f"http://127.0.0.1:{self._server.server_address[1]}{p}" for s, p in PATHS.items()}

    def doc(self, source: str) -> Any:
        """A copy of what ``source`` serves, to change and ``set``."""
        return copy.deepcopy(self.docs[source])

    def set(self, source: str, doc: Any) -> None:
        with self._lock:
            self.docs[source] = doc

    def openrouter_price(self, model: str, prompt: str, completion: str) -> None:
        doc = self.doc("openrouter")
        for item in doc["data"]:
            if item["id"] == model:
                item["pricing"].update(prompt=prompt, completion=completion)
        self.set("openrouter", doc)

    def start(self) -> MockCatalog:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                source = next((s for s, p in PATHS.items() if p == self.path), None)
                if source is None:
                    self._send(404, b'{"error": "not found"}')
                    return
                with mock._lock:
                    mock.requests[source] += 1
                    mock._in_flight[source] += 1
                    mock.max_in_flight[source] = max(mock.max_in_flight[source], mock._in_flight[source])
                    body = json.dumps(mock.docs[source]).encode()
                    status = mock.status.get(source)
                try:
                    if mock.delay_s:
                        time.sleep(mock.delay_s)
                    if status:
                        self._send(status, b'{"error": "scripted failure"}')
                        return
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        with mock._lock:
                            mock.not_modified[source] += 1
                        self._send(304, b"", etag)
                        return
                    self._send(200, body, etag)
                finally:
                    with mock._lock:
                        mock._in_flight[source] -= 1

            def _send(self, status: int, body: bytes, etag: str | None = None) -> None:
                self.send_response(status)
                if etag:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                if status != 304:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away (a worker stopping mid-download)

        self._server = Quiet(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MockCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
