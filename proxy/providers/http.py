"""Upstream HTTP transport: a lean pooled HTTP/1.1 client on plain (gevent-patched) sockets.

Measured on this machine (bench/RESULTS.md): urllib3's PoolManager spends ~300-370 us of CPU per call
(Retry/Timeout objects, http.client's email-based header parser, a poll() per checkout), requests
0.6-0.8 ms more; one keep-alive exchange on a raw socket costs ~30 us. The gateway needs only HTTP/1.1
GET/POST with a JSON body, Content-Length / chunked / read-until-close answers, gzip if an upstream
insists, and TLS, so this module does exactly that with a per-host pool of idle keep-alive connections.

Pool: no limit on connections in use (one per greenlet, gevent-sized); at most MAX_IDLE_PER_HOST idle
ones are kept per (scheme, host, port). An idle connection is checked (one non-blocking peek) before
reuse; a reused connection that fails before the first response byte is retried once on a fresh one
(the upstream closed its idle keep-alive connection: the request was not processed).

Connection failures and timeouts become TRANSIENT UpstreamErrors; bodies are returned as bytes for the
adapter to interpret; response header names are lower-cased.
"""
from __future__ import annotations

import ipaddress
import math
import os
import select
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import orjson

from proxy import __version__
from proxy.errors import TRANSIENT, UpstreamError
from proxy.providers.base import Timeouts

_MAX_RETRY_AFTER = 86400.0
MAX_IDLE_PER_HOST = 1024  # a gevent worker runs ~1000 concurrent streams: keep their connections
_MAX_HEAD = 65536  # response status line + headers
_READ = 65536
_UA_LINE = f"user-agent: keyrelay/{__version__}"


class ProtocolError(OSError):
    """The upstream broke HTTP/1.1 (an OSError, so every caller's I/O error handling covers it)."""


class _Conn:
    __slots__ = ("sock", "buf", "key")

    def __init__(self, sock: socket.socket, key: tuple[str, str, int]) -> None:
        self.sock = sock
        self.buf = b""
        self.key = key

    def fill(self) -> None:
        data = self.sock.recv(_READ)
        if not data:
            raise ProtocolError("connection closed by upstream")
        self.buf += data

    def alive(self) -> bool:
        """An idle keep-alive connection the upstream has not closed (and sent nothing on)."""
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                return not select.select([self.sock], [], [], 0)[0]
            self.sock.settimeout(0)  # non-blocking peek (gevent's recv would otherwise wait for data)
            self.sock.recv(1, socket.MSG_PEEK)
            return False  # EOF (b"") or unexpected bytes: either way not reusable
        except (BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _ip_family(host: str) -> int | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


class _Pool:
    def __init__(self) -> None:
        self.idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self.pid = os.getpid()
        self._tls: ssl.SSLContext | None = None

    def get(self, key: tuple[str, str, int]) -> _Conn | None:
        if self.pid != os.getpid():  # forked: never share sockets with the parent
            self.idle, self.pid = {}, os.getpid()
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.alive():
                return conn
            conn.close()
        return None

    def put(self, conn: _Conn) -> None:
        conns = self.idle.setdefault(conn.key, [])
        if len(conns) < MAX_IDLE_PER_HOST and not conn.buf:
            conns.append(conn)
        else:
            conn.close()

    def connect(self, key: tuple[str, str, int], timeout: float) -> _Conn:
        scheme, host, port = key
        family = _ip_family(host)
        if family is None:
            sock = socket.create_connection((host, port), timeout=timeout)
        else:  # an IP literal: no getaddrinfo (under gevent a round trip through its resolver threads)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                    self._tls.set_alpn_protocols(["http/1.1"])
                sock = self._tls.wrap_socket(sock, server_hostname=host)  # handshake within `timeout`
        except BaseException:
            sock.close()
            raise
        return _Conn(sock, key)

    def clear(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle = {}


_POOL = _Pool()


class StreamResponse:
    """An open upstream response whose body is read incrementally."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str], framing: str, length: int,
                 keep_alive: bool, idle: float) -> None:
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self._framing = framing  # "length" | "chunked" | "close"
        self._left = length  # bytes left: of the body ("length") or of the current chunk ("chunked")
        self._crlf = False  # chunked: the current chunk's data was read, its CRLF not yet
        self._keep = keep_alive
        self._idle = idle
        self._done = framing == "length" and length == 0
        encoding = headers.get("content-encoding", "").strip().lower()
        self._inflate = (zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip")
                         else zlib.decompressobj() if encoding == "deflate" else None)
        if self._done:
            self._release()

    # -- body ----------------------------------------------------------------------------------------

    def _raw1(self) -> bytes:
        """The next body bytes available (at least one, waiting if need be); b"" at the end."""
        conn = self._conn
        if self._done or conn is None:
            return b""
        if self._framing == "length":
            if not conn.buf:
                conn.fill()
            data = conn.buf[: self._left]
            conn.buf = conn.buf[len(data):]
            self._left -= len(data)
            if self._left == 0:
                self._finish()
            return data
        if self._framing == "close":
            if not conn.buf:
                data = conn.sock.recv(_READ)
                if not data:
                    self._keep = False
                    self._finish()
                    return b""
                return data
            data, conn.buf = conn.buf, b""
            return data
        while self._crlf:  # chunked: the CRLF that ends the previous chunk's data
            if len(conn.buf) < 2:
                conn.fill()
                continue
            if not conn.buf.startswith(b"\r\n"):
                raise ProtocolError("bad chunk end")
            conn.buf = conn.buf[2:]
            self._crlf = False
        while self._left == 0:  # at a chunk size line
            nl = conn.buf.find(b"\r\n")
            if nl == -1:
                if len(conn.buf) > _MAX_HEAD:
                    raise ProtocolError("bad chunk size line")
                conn.fill()
                continue
            try:
                size = int(conn.buf[:nl].split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size line") from None
            conn.buf = conn.buf[nl + 2:]
            if size == 0:
                self._trailer()
                return b""
            self._left = size
        if not conn.buf:
            conn.fill()
        data = conn.buf[: self._left]
        conn.buf = conn.buf[len(data):]
        self._left -= len(data)
        self._crlf = self._left == 0
        return data

    def _trailer(self) -> None:
        conn = self._conn
        while True:
            if conn.buf.startswith(b"\r\n"):
                conn.buf = conn.buf[2:]
                break
            end = conn.buf.find(b"\r\n\r\n")
            if end != -1:
                conn.buf = conn.buf[end + 4:]
                break
            if len(conn.buf) > _MAX_HEAD:
                raise ProtocolError("bad chunked trailer")
            conn.fill()
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep and self._done:
            _POOL.put(conn)
        else:
            conn.close()

    def read1(self) -> bytes:
        """The next decoded body bytes as soon as some arrived; b"" at the end."""
        while True:
            data = self._raw1()
            if self._inflate is None:
                return data
            if not data:
                return self._inflate.flush()
            out = self._inflate.decompress(data)
            if out:
                return out

    def read_all(self) -> bytes:
        try:
            parts = []
            while True:
                data = self.read1()
                if not data:
                    return b"".join(parts)
                parts.append(data)
        except zlib.error:
            raise ProtocolError("bad compressed body") from None
        finally:
            self.close()

    def iter_lines(self) -> Iterator[bytes]:
        """Yield lines (without CR/LF) as soon as each is complete."""
        self._set_timeout(self._idle)
        buf = b""
        try:
            while True:
                data = self.read1()
                if not data:
                    break
                buf += data
                while True:
                    cut = _line_end(buf)
                    if cut is None:
                        break
                    end, nxt = cut
                    yield buf[:end]
                    buf = buf[nxt:]
        except (OSError, zlib.error) as exc:
            raise UpstreamError(
                f"upstream stream broke: {type(exc).__name__}", outcome=TRANSIENT, status=502
            ) from None
        if buf:
            yield buf.rstrip(b"\r")

    def _set_timeout(self, seconds: float) -> None:
        if self._conn is not None:
            self._conn.sock.settimeout(seconds)

    def close(self) -> None:
        """Done with the answer: a fully read body returns its connection to the pool, else it is dropped."""
        self._keep = self._keep and self._done
        self._release()


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """Position of the first line ending (CRLF, LF or CR) as (end_of_line, start_of_next)."""
    n = buf.find(b"\n")
    r = buf.find(b"\r")
    if r == -1 and n == -1:
        return None
    if r != -1 and (n == -1 or r < n):
        if r + 1 < len(buf):
            return (r, r + 2) if buf[r + 1 : r + 2] == b"\n" else (r, r + 1)
        return None  # a lone CR at the end: wait to see if LF follows
    return n, n + 1


def iter_sse_data(lines: Iterator[bytes]) -> Iterator[tuple[str | None, str]]:
    """Parse server-sent events from lines: yields (event_name, data) per event."""
    event: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield event, "\n".join(data)


def _head(conn: _Conn) -> tuple[int, dict[str, str], bool]:
    """Read a response head: (status, lower-cased headers, keep-alive by version and Connection)."""
    while True:
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end != -1:
                break
            if len(conn.buf) > _MAX_HEAD:
                raise ProtocolError("response head too large")
            conn.fill()
        lines = conn.buf[:end].decode("latin-1").split("\r\n")
        conn.buf = conn.buf[end + 4:]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ProtocolError("bad status line")
        status = int(rest[:3])
        if 100 <= status < 200:  # interim answer (100 Continue, 103 Early Hints): the real one follows
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        return status, headers, keep


def _exchange(conn: _Conn, request: bytes, method: str, idle: float) -> StreamResponse:
    conn.sock.sendall(request)
    status, headers, keep = _head(conn)
    if method == "HEAD" or status in (204, 304):
        return StreamResponse(conn, status, headers, "length", 0, keep, idle)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return StreamResponse(conn, status, headers, "chunked", 0, keep, idle)
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length.split(",")[0])
        except ValueError:
            raise ProtocolError("bad content-length") from None
        if n < 0:
            raise ProtocolError("bad content-length")
        return StreamResponse(conn, status, headers, "length", n, keep, idle)
    return StreamResponse(conn, status, headers, "close", 0, False, idle)


_URLS: dict[str, tuple[tuple[str, str, int], str]] = {}  # url -> (pool key, request line + host header)


def _parse_url(method: str, url: str) -> tuple[tuple[str, str, int], str]:
    """(pool key, the request line and host header) for a URL; cached, URLs repeat (bounded: cleared
    past 1024 entries)."""
    hit = _URLS.get(url)
    if hit is None:
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https") or not u.hostname:
            raise UpstreamError(f"unsupported upstream URL scheme {scheme!r}", outcome=TRANSIENT, status=502)
        host = u.hostname
        authority = (f"[{host}]" if ":" in host else host) + (f":{u.port}" if u.port else "")
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if any(c.isspace() or not c.isprintable() for c in target + authority):
            raise UpstreamError("invalid upstream URL", outcome=TRANSIENT, status=502)
        port = u.port or (443 if scheme == "https" else 80)
        hit = (scheme, host, port), f"{target} HTTP/1.1\r\nhost: {authority}"
        if len(_URLS) >= 1024:
            _URLS.clear()
        _URLS[url] = hit
    return hit[0], f"{method} {hit[1]}"


def _encode_request(method: str, url: str, headers: dict[str, str], payload: bytes | None
                    ) -> tuple[tuple[str, str, int], bytes]:
    key, start = _parse_url(method, url)
    lines = [start]
    if not any(name.lower() == "user-agent" for name in headers):
        lines.append(_UA_LINE)
    for name, value in headers.items():
        value = str(value)
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError("invalid upstream header value", outcome=TRANSIENT, status=502)
        lines.append(f"{name}: {value}")
    if payload is not None:
        lines.append(f"content-length: {len(payload)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return key, head + payload if payload is not None else head


def open_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: dict | None = None,
    timeouts: Timeouts,
) -> StreamResponse:
    """Send a request and return once the response headers arrived (bounded by first_byte)."""
    payload = None if body is None else orjson.dumps(body)
    hdrs = {"content-type": "application/json", **headers} if payload is not None else dict(headers)
    key, raw = _encode_request(method, url, hdrs, payload)
    conn = _POOL.get(key)
    reused = conn is not None
    while True:
        if conn is None:
            try:
                conn = _POOL.connect(key, timeouts.connect)
            except TimeoutError:
                raise UpstreamError("upstream connect timed out", outcome=TRANSIENT, status=504) from None
            except (OSError, ValueError) as exc:
                raise UpstreamError(
                    f"upstream unreachable: {type(exc).__name__}", outcome=TRANSIENT, status=502
                ) from None
        conn.sock.settimeout(timeouts.first_byte)
        try:
            return _exchange(conn, raw, method, timeouts.idle)
        except TimeoutError:
            conn.close()
            raise UpstreamError("upstream did not answer in time", outcome=TRANSIENT, status=504) from None
        except OSError as exc:
            conn.close()
            if reused and not conn.buf:  # a stale keep-alive connection: once more on a fresh one
                conn, reused = None, False
                continue
            raise UpstreamError(
                f"upstream unreachable: {type(exc).__name__}", outcome=TRANSIENT, status=502
            ) from None


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: dict | None = None,
    timeouts: Timeouts,
) -> tuple[int, dict, bytes]:
    """A whole request: (status, headers with lower-cased names, body bytes)."""
    resp = open_request(method, url, headers=headers, body=body, timeouts=timeouts)
    try:
        data = resp.read_all()
    except TimeoutError:
        raise UpstreamError("upstream did not answer in time", outcome=TRANSIENT, status=504) from None
    except OSError as exc:
        raise UpstreamError(
            f"upstream connection broke: {type(exc).__name__}", outcome=TRANSIENT, status=502
        ) from None
    return resp.status, resp.headers, data


def read_error_body(resp: StreamResponse) -> bytes:
    """The body of an error answer; one that cannot be read is b"" (the status alone then classifies)."""
    try:
        return resp.read_all()
    except (UpstreamError, OSError):
        return b""


def json_object(data: bytes, who: str) -> dict:
    """A response body that must be a JSON object; anything else is the upstream's TRANSIENT fault."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise UpstreamError(f"{who} returned a body that is not a JSON object", outcome=TRANSIENT, status=502)
    return obj


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP-date form too)."""
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        secs = None
    if secs is not None:
        return min(max(0.0, secs), _MAX_RETRY_AFTER) if math.isfinite(secs) else None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
