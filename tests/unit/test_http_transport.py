"""The pooled HTTP/1.1 transport (proxy/providers/http.py) against a raw-socket server that sends exactly
the bytes each test scripts: framing, keep-alive reuse, stale connections, gzip, timeouts."""
from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest

from proxy.errors import UpstreamError
from proxy.providers import http
from proxy.providers.base import Timeouts

T = Timeouts(connect=2, first_byte=2, idle=2)


class RawServer:
    """Accepts connections; for each request read, sends the next scripted answer (a list of byte pieces
    sent with small pauses, so a client must handle data split anywhere); None closes the connection,
    [] holds it silently for a second, an answer with "Connection: close" closes after it."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while self.answers:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer = self.answers.pop(0)
                if answer is None:
                    return
                if not answer:  # say nothing, hold the connection a while
                    time.sleep(1)
                for piece in answer:
                    conn.sendall(piece)
                    time.sleep(0.005)
                if any(b"Connection: close" in piece for piece in answer):
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(autouse=True)
def fresh_pool():
    http._POOL.clear()
    yield
    http._POOL.clear()


def ok(body: bytes, extra: bytes = b"") -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra), body]


def test_content_length_answer_and_request_shape():
    srv = RawServer([ok(b'{"a":1}', b"X-Thing: 1\r\nX-Thing: 2\r\n")])
    status, headers, data = http.request("POST", srv.url + "/v1/x?alt=sse", headers={"x-goog-api-key": "k"},
                                         body={"q": "é"}, timeouts=T)
    assert (status, data) == (200, b'{"a":1}')
    assert headers["x-thing"] == "1, 2"
    head, _, body = srv.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/x?alt=sse HTTP/1.1\r\n")
    assert b"\r\nx-goog-api-key: k" in head and b"\r\ncontent-type: application/json" in head
    assert body == '{"q":"é"}'.encode() and b"content-length: %d" % len(body) in head
    srv.close()


def test_chunked_split_anywhere_and_keep_alive_reuses_one_connection():
    chunked = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n6\r",
               b"\n world\r\n0\r\n", b"\r\n"]
    srv = RawServer([chunked, ok(b"second")])
    assert http.request("GET", srv.url + "/a", headers={}, timeouts=T)[2] == b"hello world"
    assert http.request("GET", srv.url + "/b", headers={}, timeouts=T)[2] == b"second"
    assert srv.connections == 1
    srv.close()


def test_stream_lines_arrive_as_sent_not_batched():
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"8\r\ndata: 1\n\r\n",
              b"9\r\n\ndata: 2\n\r\n", b"1\r\n\n\r\n0\r\n\r\n"]
    srv = RawServer([pieces])
    resp = http.open_request("POST", srv.url + "/s", headers={}, body={}, timeouts=T)
    assert list(http.iter_sse_data(resp.iter_lines())) == [(None, "1"), (None, "2")]
    resp.close()
    srv.close()


def test_read_until_close_and_connection_close_are_not_reused():
    srv = RawServer([[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"], None])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"all of it"
    assert not any(http._POOL.idle.values())
    srv.close()


def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(monkeypatch):
    srv = RawServer([ok(b"one"), None, ok(b"two")])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"one"
    time.sleep(0.05)
    monkeypatch.setattr(http._Conn, "alive", lambda self: True)  # a close not noticed before reuse (a race)
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"two"
    assert srv.connections == 2
    srv.close()


def test_gzip_body_is_decoded_and_interim_answers_skipped():
    body = gzip.compress(b"x" * 1000)
    srv = RawServer([[b"HTTP/1.1 100 Continue\r\n\r\n", *ok(body, b"Content-Encoding: gzip\r\n")]])
    status, _, data = http.request("GET", srv.url + "/", headers={}, timeouts=T)
    assert (status, data) == (200, b"x" * 1000)
    srv.close()


def test_no_answer_in_time_is_a_transient_504():
    srv = RawServer([[]])  # reads the request, answers nothing
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={}, timeouts=Timeouts(1, 0.2, 1))
    assert err.value.status == 504 and err.value.outcome == "transient"
    srv.close()


def test_broken_stream_is_transient():
    srv = RawServer([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n"], None])
    resp = http.open_request("GET", srv.url + "/", headers={}, timeouts=T)
    with pytest.raises(UpstreamError, match="stream broke"):
        list(resp.iter_lines())
    srv.close()


def test_header_injection_and_bad_urls_are_refused():
    with pytest.raises(UpstreamError):
        http.request("GET", "http://127.0.0.1:9/", headers={"x-a": "1\r\nx-b: 2"}, timeouts=T)
    with pytest.raises(UpstreamError):
        http.request("GET", "ftp://127.0.0.1/", headers={}, timeouts=T)
    with pytest.raises(UpstreamError):
        http.request("GET", "http://127.0.0.1:9/a b", headers={}, timeouts=T)
