"""Upstream HTTP transport: a lean pooled HTTP/1.1 client on plain (gevent-patched) sockets.

Measured on this machine (bench/RESULTS.md): urllib3's PoolManager spends ~300-370 us of CPU per call
(Retry/Timeout objects, http.client's email-based header parser, a poll() per checkout), requests
0.6-0.8 ms more; one keep-alive exchange on a raw socket costs ~30 us. The gateway needs only HTTP/1.1
GET/POST with a JSON body, Content-Length / chunked / read-until-close answers, gzip or deflate (asked
for with ``accept-encoding: gzip, deflate``), TLS and HTTP proxies, so this module does exactly that
with a pool of idle keep-alive connections.

Transport: how one provider reaches its upstream, built once per provider (``transport_for``): the
proxy (``providers[].proxy``, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY, lower-case forms first, read
from the environment at construction, never per request), the TLS context (one per (verify, ca_file))
and the keep-alive expiry. An http upstream behind a proxy gets absolute-form requests sent to the
proxy; an https one a ``CONNECT host:port`` tunnel, then TLS with the origin through it.

Pool: no limit on connections in use (one per greenlet, gevent-sized); at most MAX_IDLE_PER_HOST idle
ones are kept per (scheme, host, port, proxy, TLS context). An idle connection older than its
transport's keep-alive expiry is closed, never reused; a younger one is checked (one non-blocking
peek) before reuse. A reused connection that fails before any byte of a response arrived is retried
once on a fresh one (the upstream closed its idle keep-alive connection: the request was not
processed); once a response byte arrived, or on a timeout, the failure is the caller's error.

Time limits (``Timeouts``): ``connect`` bounds DNS, TCP connect, the proxy tunnel and the TLS
handshake together (under gevent with a gevent.Timeout, so name resolution too); ``first_byte`` the
time from sending the request until the whole response head arrived; a whole body is read within
``idle`` between two reads; a stream within ``idle`` between two lines. ``deadline`` (monotonic)
caps every phase (for a stream, until its first line): a server dripping bytes cannot hold a call.

The HTTP/1.1 framing is checked strictly: chunk-size lines must be hex digits (optional ``;ext``),
Content-Length plain digits and unambiguous, never with Transfer-Encoding. Connection failures, broken
framing and timeouts become TRANSIENT UpstreamErrors; bodies are returned as bytes for the adapter to
interpret; response header names are lower-cased. Errors never contain keys or proxy credentials.
"""
from __future__ import annotations

import base64
import ipaddress
import logging
import math
import os
import re
import select
import socket
import ssl
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

import orjson

from proxy import __version__
from proxy.errors import TRANSIENT, UpstreamError
from proxy.providers.base import Timeouts

if TYPE_CHECKING:
    from proxy.config import ProviderConfig

log = logging.getLogger("keyrelay")

_MAX_RETRY_AFTER = 86400.0
MAX_IDLE_PER_HOST = 1024  # a gevent worker runs ~1000 concurrent streams: keep their connections
_MAX_HEAD = 65536  # response status line + headers
_READ = 65536
_UA_LINE = f"user-agent: keyrelay/{__version__}"
_AE_LINE = "accept-encoding: gzip, deflate"  # what StreamResponse inflates
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?")
_DEFAULT_EXPIRY = 15.0


class ProtocolError(OSError):
    """The upstream broke HTTP/1.1 (an OSError, so every caller's I/O error handling covers it)."""


class ProxyRefused(OSError):
    """The proxy answered CONNECT with something else than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"proxy answered CONNECT with {status}")
        self.status = status


def _settimeout(sock: socket.socket, until: float, step: float = math.inf) -> None:
    """Socket timeout for the next operation: what is left until ``until``, at most ``step``."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("upstream time limit reached")
    left = step if step < left else left
    sock.settimeout(None if left == math.inf else left)


class _Conn:
    __slots__ = ("sock", "buf", "key", "until", "step", "got", "since", "expiry")

    def __init__(self, sock: socket.socket, key: tuple, expiry: float = _DEFAULT_EXPIRY) -> None:
        self.sock = sock
        self.buf = b""
        self.key = key
        self.until = math.inf  # no read goes past this (time.monotonic())
        self.step = math.inf  # nor waits longer than this
        self.got = False  # a byte of a response arrived on this connection during the current exchange
        self.since = 0.0  # idle in the pool since
        self.expiry = expiry

    def recv(self) -> bytes:
        _settimeout(self.sock, self.until, self.step)
        return self.sock.recv(_READ)

    def fill(self) -> None:
        data = self.recv()
        if not data:
            raise ProtocolError("connection closed by upstream")
        self.got = True
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


def _ip_family(host: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------- transport


class _Proxy:
    """An http:// proxy: address and the Proxy-Authorization header line ("" without credentials)."""

    __slots__ = ("host", "port", "auth")

    def __init__(self, url: str) -> None:
        u = urlsplit(url if "://" in url else f"http://{url}")
        if u.scheme.lower() != "http" or not u.hostname:
            raise ValueError("only http:// proxies are supported")
        self.host, self.port = u.hostname, u.port or 80
        self.auth = ""
        if u.username is not None:
            token = base64.b64encode(f"{unquote(u.username)}:{unquote(u.password or '')}".encode()).decode()
            self.auth = f"proxy-authorization: Basic {token}"

    def __repr__(self) -> str:  # never the credentials
        return f"<proxy {_authority(self.host, self.port)}>"


_PROXIES: dict[str, _Proxy] = {}  # url -> proxy: one object per proxy, so pool keys can hold it
_TLS: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def _proxy(url: str) -> _Proxy:
    hit = _PROXIES.get(url)
    if hit is None:
        hit = _PROXIES[url] = _Proxy(url)
    return hit


def tls_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """The (cached) client context: system trust store, or only ``ca_file``; ``verify=False`` checks
    nothing (for operators behind an inspecting proxy)."""
    ctx = _TLS.get((verify, ca_file))
    if ctx is None:
        ctx = ssl.create_default_context(cafile=ca_file)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        ctx = _TLS[(verify, ca_file)] = ctx
    return ctx


class _Target:
    """One upstream URL through one transport: pool key, request line start, where to connect."""

    __slots__ = ("key", "line", "scheme", "host", "port", "proxy", "tls", "expiry")

    def __init__(self, key: tuple, line: str, scheme: str, host: str, port: int, proxy: _Proxy | None,
                 tls: ssl.SSLContext | None, expiry: float) -> None:
        self.key, self.line, self.scheme, self.host, self.port = key, line, scheme, host, port
        self.proxy, self.tls, self.expiry = proxy, tls, expiry


def _env(env: Mapping[str, str], name: str) -> str:
    return (env.get(name.lower()) or env.get(name.upper()) or "").strip()


def _no_proxy_rules(value: str) -> list:
    rules: list = []
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return ["*"]
        try:
            rules.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        rules.append((name.removeprefix("*").removeprefix("."), int(port) if port.isdigit() else None))
    return rules


class Tap(Protocol):
    """Sees one upstream exchange and may reshape its request first (the inspector and the transforms,
    ``proxy.inspect.capture``). Each method only copies references and times: no I/O, nothing slow."""

    def request(self, method: str, url: str, headers: dict[str, str],
                body: dict | None) -> tuple[dict[str, str], dict | None, frozenset[str]]:
        """(headers, body, transport default headers to leave out) to send instead."""
        ...

    def connected(self, sock: socket.socket | ssl.SSLSocket, reused: bool) -> None:
        """A connection is ready: a new one, or one ``reused`` from the pool."""

    def sent(self, raw: bytes) -> None:
        """The request's bytes (head and body) went out."""

    def head(self, status: int, headers: dict[str, str]) -> None:
        """The response head arrived."""

    def data(self, chunk: bytes) -> None:
        """Decoded body bytes arrived (b"": the body ended)."""


class Transport:
    """How one provider reaches its upstream: proxy, TLS and keep-alive expiry, resolved at construction.

    ``proxy``: None = HTTPS_PROXY / HTTP_PROXY / NO_PROXY from ``env`` (default os.environ), "" = none,
    else an http:// proxy URL used for every upstream (NO_PROXY does not apply to it). ``tapped(tap)``:
    the same transport for one call, with a ``Tap`` watching (and maybe reshaping) it."""

    tap: Tap | None = None

    def __init__(self, *, proxy: str | None = "", verify: bool = True, ca_file: str | None = None,
                 keepalive_expiry: float = _DEFAULT_EXPIRY, env: Mapping[str, str] | None = None) -> None:
        self.verify, self.ca_file, self.keepalive_expiry = verify, ca_file, keepalive_expiry
        self.no_proxy: list = []
        self.http_proxy: _Proxy | None = None
        self.https_proxy: _Proxy | None = None
        if proxy:
            self.http_proxy = self.https_proxy = _proxy(proxy)
        elif proxy is None:
            env = os.environ if env is None else env
            for scheme in ("http", "https"):
                url = _env(env, f"{scheme}_proxy")
                if url:
                    try:
                        setattr(self, f"{scheme}_proxy", _proxy(url))
                    except ValueError:  # name the variable, never its value (credentials)
                        log.warning("%s_PROXY is not an http:// proxy URL: ignored", scheme.upper())
            self.no_proxy = _no_proxy_rules(_env(env, "no_proxy"))
        self._targets: dict[str, _Target] = {}

    def tapped(self, tap: Tap) -> Transport:
        clone = object.__new__(Transport)  # shares the pool keys and the target cache
        clone.__dict__.update(self.__dict__)
        clone.tap = tap
        return clone

    def _bypass(self, host: str, port: int) -> bool:
        host = host.lower()
        for rule in self.no_proxy:
            if rule == "*":
                return True
            if isinstance(rule, tuple):
                name, rport = rule
                if (host == name or host.endswith(f".{name}")) and rport in (None, port):
                    return True
            elif _ip_family(host) is not None and ipaddress.ip_address(host) in rule:
                return True
        return False

    def target(self, url: str) -> _Target:
        """The target of a URL; cached, URLs repeat (bounded: cleared past 1024 entries)."""
        hit = self._targets.get(url)
        if hit is None:
            hit = self._target(url)
            if len(self._targets) >= 1024:
                self._targets.clear()
            self._targets[url] = hit
        return hit

    def _target(self, url: str) -> _Target:
        u = urlsplit(url)
        scheme = u.scheme.lower()
        try:
            port = u.port or (443 if scheme == "https" else 80)
        except ValueError:
            port = 0
        if scheme not in ("http", "https") or not u.hostname or not port:
            raise UpstreamError(f"unsupported upstream URL scheme {scheme!r}", outcome=TRANSIENT, status=502)
        host = u.hostname
        authority = (f"[{host}]" if ":" in host else host) + (f":{u.port}" if u.port else "")
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if any(c.isspace() or not c.isprintable() for c in path + authority):
            raise UpstreamError("invalid upstream URL", outcome=TRANSIENT, status=502)
        proxy = self.https_proxy if scheme == "https" else self.http_proxy
        if proxy is not None and self._bypass(host, port):
            proxy = None
        line = f"{path} HTTP/1.1\r\nhost: {authority}"
        if proxy is not None and scheme == "http":  # absolute form to the proxy itself
            line = f"http://{authority}{line}" + (f"\r\n{proxy.auth}" if proxy.auth else "")
        tls = tls_context(self.verify, self.ca_file) if scheme == "https" else None
        key = (scheme, host, port, proxy, tls)
        return _Target(key, line, scheme, host, port, proxy, tls, self.keepalive_expiry)


_DIRECT = Transport()  # transport=None: no proxy, verified TLS against the system store
_BY_PROVIDER: dict[int, tuple[object, Transport]] = {}


def transport_for(provider: ProviderConfig) -> Transport:
    """The provider's transport, built (and the environment read) once per provider config."""
    hit = _BY_PROVIDER.get(id(provider))
    if hit is not None and hit[0] is provider:
        return hit[1]
    transport = Transport(proxy=provider.proxy, verify=provider.tls.verify, ca_file=provider.tls.ca_file,
                          keepalive_expiry=provider.timeouts.keepalive_expiry)
    if not provider.tls.verify:
        log.warning("provider %s: TLS certificate verification is disabled (tls.verify: false)",
                    provider.name)
    if len(_BY_PROVIDER) >= 256:
        _BY_PROVIDER.clear()
    _BY_PROVIDER[id(provider)] = (provider, transport)
    return transport


# ---------------------------------------------------------------------------------------------- pool


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def _open(host: str, port: int, until: float) -> socket.socket:
    family = _ip_family(host)
    addrs: list[tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]]]
    if family is None:
        addrs = [(af, sa) for af, _, _, _, sa in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    else:  # an IP literal: no getaddrinfo (under gevent a round trip through its resolver threads)
        addrs = [(family, (host, port))]
    error: OSError = OSError("no address")
    for af, addr in addrs:
        sock = socket.socket(af, socket.SOCK_STREAM)
        try:
            _settimeout(sock, until)
            sock.connect(addr)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            error = exc
    raise error


def _tunnel(sock: socket.socket, t: _Target, until: float) -> None:
    """CONNECT host:port through the proxy; returns once the tunnel is up."""
    authority = _authority(t.host, t.port)
    auth = f"{t.proxy.auth}\r\n" if t.proxy and t.proxy.auth else ""
    _settimeout(sock, until)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n".encode())
    conn = _Conn(sock, ())
    conn.until = until
    status, _, _ = _head(conn)
    if not 200 <= status < 300:
        raise ProxyRefused(status)
    if conn.buf:
        raise ProtocolError("proxy sent bytes after its CONNECT answer")


def _connect(t: _Target, until: float) -> _Conn:
    """A new connection: DNS, TCP, proxy tunnel and TLS handshake, all before ``until``."""
    timer = None
    if _gevent_patched() and until != math.inf:  # bounds getaddrinfo too (socket timeouts cannot)
        import gevent

        timer = gevent.Timeout(max(0.0, until - time.monotonic()), TimeoutError)
        timer.start()
    try:
        host, port = (t.proxy.host, t.proxy.port) if t.proxy else (t.host, t.port)
        sock = _open(host, port, until)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if t.proxy is not None and t.scheme == "https":
                _tunnel(sock, t, until)
            if t.tls is not None:
                _settimeout(sock, until)
                sock = t.tls.wrap_socket(sock, server_hostname=t.host)
        except BaseException:
            sock.close()
            raise
    finally:
        if timer is not None:
            timer.close()
    return _Conn(sock, t.key, t.expiry)


class _Pool:
    def __init__(self) -> None:
        self.idle: dict[tuple, list[_Conn]] = {}
        self.pid = os.getpid()

    def get(self, key: tuple) -> _Conn | None:
        if self.pid != os.getpid():  # forked: never share sockets with the parent
            self.idle, self.pid = {}, os.getpid()
        conns = self.idle.get(key)
        if conns:
            now = time.monotonic()
            while conns:
                conn = conns.pop()  # the most recently used first
                if now - conn.since < conn.expiry and conn.alive():
                    conn.got = False
                    return conn
                conn.close()
        return None

    def put(self, conn: _Conn) -> None:
        conns = self.idle.setdefault(conn.key, [])
        now = conn.since = time.monotonic()
        while conns and now - conns[0].since >= conns[0].expiry:  # oldest first: drop the expired
            conns.pop(0).close()
        if len(conns) < MAX_IDLE_PER_HOST and not conn.buf:
            conns.append(conn)
        else:
            conn.close()

    def clear(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle = {}


_POOL = _Pool()


class StreamResponse:
    """An open upstream response whose body is read incrementally."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str], framing: str, length: int,
                 keep_alive: bool, timeouts: Timeouts, tap: Tap | None = None) -> None:
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self._framing = framing  # "length" | "chunked" | "close"
        self._left = length  # bytes left: of the body ("length") or of the current chunk ("chunked")
        self._crlf = False  # chunked: the current chunk's data was read, its CRLF not yet
        self._keep = keep_alive
        self._timeouts = timeouts
        self._tap = tap
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
                data = conn.recv()
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
            m = _CHUNK_SIZE.fullmatch(conn.buf, 0, nl)
            if m is None:
                raise ProtocolError("bad chunk size line")
            size = int(m.group(1), 16)
            conn.buf = conn.buf[nl + 2:]
            if size == 0:
                self._trailer(conn)
                return b""
            self._left = size
        if not conn.buf:
            conn.fill()
        data = conn.buf[: self._left]
        conn.buf = conn.buf[len(data):]
        self._left -= len(data)
        self._crlf = self._left == 0
        return data

    def _trailer(self, conn: _Conn) -> None:
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

    def _limit(self, until: float, step: float) -> None:
        if self._conn is not None:
            self._conn.until, self._conn.step = until, step

    def read1(self) -> bytes:
        """The next decoded body bytes as soon as some arrived; b"" at the end."""
        data = self._read1()
        if self._tap is not None:
            self._tap.data(data)
            if not data:
                self._tap = None
        return data

    def _read1(self) -> bytes:
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
        """The whole body, within the deadline and at most ``idle`` between two reads."""
        self._limit(self._timeouts.deadline, self._timeouts.idle)
        try:
            parts: list[bytes] = []
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
        """Yield lines (without CR/LF) as soon as each is complete: the first within the deadline and
        ``idle``, each next one within ``idle`` of asking for it."""
        idle = self._timeouts.idle
        self._limit(min(self._timeouts.deadline, time.monotonic() + idle), math.inf)
        buf = b""
        fresh = False  # a line was yielded since the time limit was set
        try:
            while True:
                if fresh:
                    self._limit(time.monotonic() + idle, math.inf)
                    fresh = False
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
                    fresh = True
                    buf = buf[nxt:]
        except (OSError, zlib.error) as exc:
            raise UpstreamError(
                f"upstream stream broke: {type(exc).__name__}", outcome=TRANSIENT, status=502
            ) from None
        if buf:
            yield buf.rstrip(b"\r")

    def close(self) -> None:
        """Done with the answer: a fully read body returns its connection to the pool, else it is dropped."""
        if self._tap is not None:
            self._tap.data(b"")
            self._tap = None
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
        if raw[:6] == b"data: " and not data:  # the common line, taken without the general parse
            data.append(raw[6:].decode("utf-8"))
            continue
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
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
            raise ProtocolError("bad status line")
        status = int(code)
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


def _content_length(value: str) -> int:
    """Content-Length: digits; repeated identical values are one (RFC 9112 6.3), different ones refused."""
    values = {v.strip() for v in value.split(",")}
    n = values.pop()
    if values or not (n.isascii() and n.isdigit()):
        raise ProtocolError("bad content-length")
    return int(n)


def _exchange(conn: _Conn, request: bytes, method: str, timeouts: Timeouts,
              tap: Tap | None = None) -> StreamResponse:
    _settimeout(conn.sock, conn.until)
    conn.sock.sendall(request)
    if tap is not None:
        tap.sent(request)
    status, headers, keep = _head(conn)
    if tap is not None:
        tap.head(status, headers)
    if method == "HEAD" or status in (204, 304):
        return StreamResponse(conn, status, headers, "length", 0, keep, timeouts, tap)
    te = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if te is not None:
        if length is not None:  # request smuggling's favourite ambiguity
            raise ProtocolError("both content-length and transfer-encoding")
        if te.strip().lower() != "chunked":
            raise ProtocolError("unsupported transfer-encoding")
        return StreamResponse(conn, status, headers, "chunked", 0, keep, timeouts, tap)
    if length is not None:
        return StreamResponse(conn, status, headers, "length", _content_length(length), keep, timeouts, tap)
    return StreamResponse(conn, status, headers, "close", 0, False, timeouts, tap)


def _encode_request(method: str, target: _Target, headers: dict[str, str], payload: bytes | None,
                    omit: frozenset[str] = frozenset()) -> bytes:
    lines = [f"{method} {target.line}"]
    ua, ae = "user-agent" in omit, "accept-encoding" in omit
    for name, value in headers.items():
        value = str(value)
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError("invalid upstream header value", outcome=TRANSIENT, status=502)
        lines.append(f"{name}: {value}")
        low = name.lower()
        ua = ua or low == "user-agent"
        ae = ae or low == "accept-encoding"
    if not ua:
        lines.append(_UA_LINE)
    if not ae:
        lines.append(_AE_LINE)
    if payload is not None:
        lines.append(f"content-length: {len(payload)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head + payload if payload is not None else head


def open_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: dict | None = None,
    timeouts: Timeouts,
    transport: Transport | None = None,
) -> StreamResponse:
    """Send a request and return once the response head arrived (within first_byte and the deadline)."""
    tap = transport.tap if transport is not None else None
    omit: frozenset[str] = frozenset()
    if tap is not None:
        headers, body, omit = tap.request(method, url, headers, body)
    payload = None if body is None else orjson.dumps(body)
    hdrs = {"content-type": "application/json", **headers} if payload is not None else dict(headers)
    target = (transport or _DIRECT).target(url)
    raw = _encode_request(method, target, hdrs, payload, omit)
    conn = _POOL.get(target.key)
    reused = conn is not None
    if tap is not None and conn is not None:
        tap.connected(conn.sock, True)
    while True:
        if conn is None:
            try:
                conn = _connect(target, min(time.monotonic() + timeouts.connect, timeouts.deadline))
                if tap is not None:
                    tap.connected(conn.sock, False)
            except TimeoutError:
                raise UpstreamError("upstream connect timed out", outcome=TRANSIENT, status=504) from None
            except ProxyRefused as exc:
                raise UpstreamError(f"upstream proxy refused the tunnel ({exc.status})", outcome=TRANSIENT,
                                    status=502) from None
            except (OSError, ValueError) as exc:
                raise UpstreamError(
                    f"upstream unreachable: {type(exc).__name__}", outcome=TRANSIENT, status=502
                ) from None
        conn.until = min(time.monotonic() + timeouts.first_byte, timeouts.deadline)
        conn.step = math.inf
        try:
            return _exchange(conn, raw, method, timeouts, tap)
        except TimeoutError:
            conn.close()
            raise UpstreamError("upstream did not answer in time", outcome=TRANSIENT, status=504) from None
        except OSError as exc:
            conn.close()
            if reused and not conn.got:  # a stale keep-alive connection: once more on a fresh one
                conn, reused = None, False
                continue
            what = f"broke HTTP/1.1 ({exc})" if isinstance(exc, ProtocolError) else \
                f"unreachable: {type(exc).__name__}"
            raise UpstreamError(f"upstream {what}", outcome=TRANSIENT, status=502) from None


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: dict | None = None,
    timeouts: Timeouts,
    transport: Transport | None = None,
) -> tuple[int, dict, bytes]:
    """A whole request: (status, headers with lower-cased names, body bytes)."""
    resp = open_request(method, url, headers=headers, body=body, timeouts=timeouts, transport=transport)
    try:
        data = resp.read_all()
    except TimeoutError:
        raise UpstreamError("upstream did not answer in time", outcome=TRANSIENT, status=504) from None
    except OSError as exc:
        what = f" ({exc})" if isinstance(exc, ProtocolError) else f": {type(exc).__name__}"
        raise UpstreamError(f"upstream connection broke{what}", outcome=TRANSIENT, status=502) from None
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
