"""The pooled HTTP/1.1 transport (proxy/providers/http.py) against a raw-socket server that sends exactly
the bytes each test scripts: framing, keep-alive reuse, stale connections, gzip, timeouts."""
from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from proxy.errors import TRANSIENT, UpstreamError
from proxy.providers import http
from proxy.providers.base import Timeouts

T = Timeouts(connect=2, first_byte=2, idle=2)


class RawServer:
    """Accepts connections; for each request read, sends the next scripted answer (a list of byte pieces
    sent with small pauses, so a client must handle data split anywhere; a float piece pauses that long,
    a None piece closes the connection); None closes the connection, [] holds it silently for a second,
    an answer with "Connection: close" closes after it. A client that goes away ends the thread."""

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
        try:
            self._answer(conn)
        except OSError:  # the client hung up mid-answer
            pass

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(5)
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
                    if piece is None:
                        return
                    if isinstance(piece, float):
                        time.sleep(piece)
                        continue
                    conn.sendall(piece)
                    time.sleep(0.005)
                if any(isinstance(piece, bytes) and b"Connection: close" in piece for piece in answer):
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


# -- strict framing ------------------------------------------------------------------------------------

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("size_line", [b"-5", b"0x1a", b"+a", b" a", b"a ", b" a ", b"1_0", b"", b"g",
                                       b"a\tb", b"12345678901234567"])
def test_a_bad_chunk_size_line_is_a_transient_error_not_a_short_body(size_line):
    srv = RawServer([[CHUNKED, b"3\r\nabc\r\n", size_line + b"\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"]])
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={}, timeouts=T)
    assert err.value.outcome == TRANSIENT and "chunk size" in err.value.message
    srv.close()


def test_chunk_extensions_are_allowed_and_hex_is_either_case():
    srv = RawServer([[CHUNKED, b"A;name=value\r\n0123456789\r\n1b\r\n", b"x" * 27, b"\r\n0;last\r\n\r\n"]])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"0123456789" + b"x" * 27
    srv.close()


@pytest.mark.parametrize("head", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: \xb2\r\n",  # a latin-1 superscript digit: str.isdigit() says yes
])
def test_ambiguous_framing_is_refused(head):
    srv = RawServer([[b"HTTP/1.1 200 OK\r\n" + head + b"\r\nhello"]])
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={}, timeouts=T)
    assert err.value.outcome == TRANSIENT and err.value.status == 502
    srv.close()


def test_repeated_identical_content_length_is_one():
    srv = RawServer([[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"]])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"hello"
    srv.close()


# -- keep-alive ---------------------------------------------------------------------------------------


def test_idle_connections_expire():
    srv = RawServer([ok(b"1"), ok(b"2"), ok(b"3")])
    transport = http.Transport(keepalive_expiry=0.4)
    for expected in (b"1", b"2"):
        assert http.request("GET", srv.url + "/", headers={}, timeouts=T, transport=transport)[2] == expected
    assert srv.connections == 1  # reused within the expiry
    time.sleep(0.6)
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T, transport=transport)[2] == b"3"
    assert srv.connections == 2  # the expired one was closed, a new one opened
    srv.close()


def test_a_stale_connection_that_sent_part_of_an_answer_is_not_retried(monkeypatch):
    srv = RawServer([ok(b"one"), [b"HTTP/1.1 2", None], ok(b"two")])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"one"
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={}, timeouts=T)
    assert err.value.outcome == TRANSIENT
    assert srv.connections == 1 and len(srv.answers) == 1  # no second attempt reached the server
    srv.close()


def test_an_idle_connection_the_upstream_closed_is_replaced_transparently():
    srv = RawServer([[*ok(b"one"), None], ok(b"two")])  # closes silently after its answer
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"one"
    time.sleep(0.1)
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"two"
    assert srv.connections == 2
    srv.close()


# -- what the request says ----------------------------------------------------------------------------


def test_accept_encoding_names_what_is_decoded():
    body = zlib.compress(b"y" * 500)
    srv = RawServer([ok(body, b"Content-Encoding: deflate\r\n"), ok(b"plain")])
    assert http.request("GET", srv.url + "/", headers={}, timeouts=T)[2] == b"y" * 500
    assert b"\r\naccept-encoding: gzip, deflate\r\n" in srv.requests[0]
    http.request("GET", srv.url + "/", headers={"Accept-Encoding": "identity"}, timeouts=T)
    assert srv.requests[1].lower().count(b"accept-encoding") == 1
    srv.close()


# -- time limits --------------------------------------------------------------------------------------


def drip(data: bytes, every: float) -> list:
    out: list = []
    for i in range(len(data)):
        out += [data[i : i + 1], every]
    return out


def test_a_head_dripping_byte_by_byte_is_cut_off_at_first_byte():
    srv = RawServer([drip(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 40, 0.1)])  # each byte well within 0.5 s
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={}, timeouts=Timeouts(connect=1, first_byte=0.5, idle=5))
    assert err.value.status == 504 and err.value.outcome == TRANSIENT
    assert 0.4 < time.monotonic() - started < 1.5
    srv.close()


def test_a_body_dripping_slowly_is_cut_off_at_the_deadline():
    srv = RawServer([[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", *drip(b"b" * 100, 0.1)]])
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={},
                     timeouts=Timeouts(connect=1, first_byte=5, idle=5, deadline=started + 0.7))
    assert err.value.status == 504
    assert 0.6 < time.monotonic() - started < 1.5
    srv.close()


def test_a_stream_line_dripping_slowly_is_cut_off_at_idle():
    srv = RawServer([[CHUNKED, b"9\r\ndata: 1\n\n\r\n", *drip(b"1\r\nx\r\n" * 20, 0.02)]])
    resp = http.open_request("GET", srv.url + "/", headers={}, timeouts=Timeouts(connect=1, first_byte=1,
                                                                                    idle=0.5))
    lines = resp.iter_lines()
    assert next(lines) == b"data: 1"
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="stream broke"):
        list(lines)  # bytes keep coming, a line never completes
    assert 0.4 < time.monotonic() - started < 1.5
    resp.close()
    srv.close()


def test_the_deadline_bounds_the_head_too():
    srv = RawServer([[]])
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        http.request("GET", srv.url + "/", headers={},
                     timeouts=Timeouts(connect=5, first_byte=5, idle=5, deadline=started + 0.3))
    assert err.value.status == 504 and time.monotonic() - started < 0.9
    srv.close()


def test_a_proxy_that_never_answers_connect_is_bounded_by_connect():
    srv = RawServer([[]])  # reads the CONNECT, says nothing
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="connect timed out"):
        http.request("GET", "https://upstream.invalid/", headers={}, timeouts=Timeouts(0.3, 5, 5),
                     transport=http.Transport(proxy=srv.url))
    assert time.monotonic() - started < 0.9
    assert srv.requests[0].startswith(b"CONNECT upstream.invalid:443 HTTP/1.1\r\n")
    srv.close()


# -- proxies ------------------------------------------------------------------------------------------


def test_http_upstream_through_a_proxy_uses_the_absolute_form():
    proxy = RawServer([ok(b"via proxy"), ok(b"again")])
    host = proxy.url.removeprefix("http://")
    transport = http.Transport(proxy=f"http://al%40ce:p%3Ass@{host}")
    url = "http://upstream.example:8080/v1/models?x=1"
    assert http.request("GET", url, headers={}, timeouts=T, transport=transport)[2] == b"via proxy"
    assert http.request("GET", url, headers={}, timeouts=T, transport=transport)[2] == b"again"
    head = proxy.requests[0].decode()
    assert head.startswith("GET http://upstream.example:8080/v1/models?x=1 HTTP/1.1\r\n")
    assert "\r\nhost: upstream.example:8080\r\n" in head
    assert "\r\nproxy-authorization: Basic YWxAY2U6cDpzcw==\r\n" in head  # al@ce:p:ss
    assert proxy.connections == 1
    proxy.close()


def test_proxy_environment_is_read_once_and_no_proxy_bypasses():
    proxy = RawServer([ok(b"proxied")])
    env = {"HTTP_PROXY": proxy.url, "no_proxy": "localhost, .internal"}
    transport = http.Transport(proxy=None, env=env)
    env["HTTP_PROXY"] = "http://127.0.0.1:9"  # read at construction, never per request
    assert http.request("GET", "http://api.example/", headers={}, timeouts=T, transport=transport)[2] == \
        b"proxied"
    assert proxy.requests[0].startswith(b"GET http://api.example/ HTTP/1.1")
    assert transport.target("http://svc.internal/").proxy is None
    assert transport.target("http://localhost:1234/").proxy is None
    assert transport.target("http://internal.example/").proxy is not None
    assert transport.target("https://api.example/").proxy is None  # no HTTPS_PROXY set
    assert http.Transport(proxy="", env=env).target("http://api.example/").proxy is None
    assert http.Transport(proxy=None, env={"NO_PROXY": "*", "http_proxy": proxy.url}).target(
        "http://a/").proxy is None
    proxy.close()


def test_pool_keys_hold_the_proxy():
    a, b = http.Transport(proxy="http://127.0.0.1:1"), http.Transport(proxy="")
    assert a.target("http://x/").key != b.target("http://x/").key
    assert http.Transport(proxy="http://127.0.0.1:1").target("http://x/").key == a.target("http://x/").key


GEVENT_SLOW_DNS = """
from gevent import monkey; monkey.patch_all()
import socket, time, gevent
from proxy.errors import UpstreamError
from proxy.providers import http
from proxy.providers.base import Timeouts

def slow_resolver(*args, **kwargs):
    gevent.sleep(5)
    raise OSError("never resolved")

socket.getaddrinfo = slow_resolver
started = time.monotonic()
try:
    http.request("GET", "http://slow-dns.example/", headers={}, timeouts=Timeouts(0.3, 5, 5))
except UpstreamError as exc:
    print(exc.status, exc.message, round(time.monotonic() - started, 2))
"""


def test_under_gevent_name_resolution_is_inside_the_connect_limit():
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", GEVENT_SLOW_DNS], cwd=repo, capture_output=True, text=True,
                         timeout=30)
    status, *words, elapsed = out.stdout.split()
    assert (status, " ".join(words)) == ("504", "upstream connect timed out"), out.stderr
    assert float(elapsed) < 1.5
