"""The load driver: N gevent greenlets, one keep-alive HTTP/1.1 connection each, raw sockets.

Closed loop: every greenlet sends its next request as soon as the previous answer ended, until
``--requests`` were sent or ``--duration`` seconds passed. All connections are opened before the clock
starts. Per request it measures latency (send -> last byte), time to first byte (send -> response
headers) and, for streams, the arrival time of every content chunk (each carries ``kr-chunk-<i>``, see
bench/mock.py), from which it reports time to first chunk and chunk inter-arrival gaps (batching
shows up as gaps near 0 instead of the upstream's spacing).

A request costs the driver ~40 us of CPU, so it stays far from being the bottleneck.
Run: ``python -m bench.load --url URL --body JSON -c 16 -n 5000 [--stream --expect-chunks 10]``;
prints one JSON object (see ``summarize``).
"""

# ruff: noqa: E402
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import json
import os
import random
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import gevent
from gevent.event import Event

_MARK = re.compile(rb"kr-chunk-(\d+)")


class _Broken(Exception):
    pass


@dataclass
class Stats:
    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    inflight: int = 0
    max_inflight: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def build_request(url: str, body: bytes | None, headers: dict[str, str]) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    lines = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1", f"Host: {u.netloc}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    return u.hostname or "127.0.0.1", u.port or 80, raw


class Conn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def connect(self) -> None:
        self.close()
        s = socket.create_connection(self.addr, timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _more(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise _Broken("closed")
        self.buf += data

    def exchange(self, raw: bytes, t0: float, marks: list[float] | None) -> tuple[int, float, bool]:
        """Send one request and read its answer; returns (status, ttfb, keep_alive).
        ``marks`` collects the arrival time of each stream content chunk."""
        self.sock.sendall(raw)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end != -1:
                break
            self._more()
        ttfb = time.perf_counter() - t0
        head, self.buf = self.buf[:end].lower(), self.buf[end + 4 :]
        status = int(head[9:12])
        keep = b"connection: close" not in head
        i = head.find(b"\r\ncontent-length:")
        if i != -1:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17 : j if j != -1 else None])
            while len(self.buf) < length:
                self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
            if marks is not None:
                now = time.perf_counter()
                marks.extend(now for _ in _MARK.finditer(body))
            return status, ttfb, keep
        if b"transfer-encoding: chunked" not in head:
            raise _Broken("no length")
        self._read_chunked(marks)
        return status, ttfb, keep

    def _read_chunked(self, marks: list[float] | None) -> None:
        while True:
            while True:
                nl = self.buf.find(b"\r\n")
                if nl != -1:
                    break
                self._more()
            size = int(self.buf[:nl].split(b";")[0], 16)
            while len(self.buf) < nl + 2 + size + 2:
                self._more()
            data = self.buf[nl + 2 : nl + 2 + size]
            self.buf = self.buf[nl + 2 + size + 2 :]
            if size == 0:
                return
            if marks is not None:
                now = time.perf_counter()
                marks.extend(now for _ in _MARK.finditer(data))


def run(
    url: str,
    body: bytes | None = None,
    *,
    concurrency: int = 1,
    requests: int = 1000,
    duration: float = 60.0,
    headers: dict[str, str] | None = None,
    stream: bool = False,
    expect_chunks: int = 0,
    timeout: float = 30.0,
    ramp: float = 0.0,
    unique: bytes = b"",
) -> dict:
    """``ramp``: greenlet i starts its first request i/concurrency * ramp seconds after the start (a
    steady arrival of new streams instead of all at the same instant). ``unique``: a marker in the body
    replaced in every request by a number of the same width, unique to this run (every request differs,
    e.g. a response cache's misses)."""
    host, port, raw = build_request(url, body, headers or {})
    nonce = random.randrange(10**6)
    st = Stats()
    start = Event()
    conns = [Conn(host, port, timeout) for _ in range(concurrency)]

    def opener(c: Conn) -> None:
        try:
            c.connect()
        except OSError:
            st.error("connect")

    gevent.joinall([gevent.spawn(opener, c) for c in conns], timeout=timeout)
    deadline = [0.0]

    def worker(i: int, c: Conn) -> None:
        start.wait()
        if ramp:
            gevent.sleep(ramp * i / concurrency)
        while st.sent < requests and time.perf_counter() < deadline[0]:
            st.sent += 1
            marks: list[float] | None = [] if stream else None
            st.inflight += 1
            st.max_inflight = max(st.max_inflight, st.inflight)
            req = raw.replace(unique, b"%06d%0*d" % (nonce, len(unique) - 6, st.sent)) if unique else raw
            t0 = time.perf_counter()
            try:
                if c.sock is None:
                    c.connect()
                status, ttfb, keep = c.exchange(req, t0, marks)
            except (OSError, _Broken, ValueError) as exc:
                st.error(type(exc).__name__ if not isinstance(exc, _Broken) else f"broken:{exc}")
                c.close()
                continue
            finally:
                st.inflight -= 1
            t1 = time.perf_counter()
            if not keep:
                c.close()
            if status != 200:
                st.error(f"http_{status}")
                continue
            if stream:
                st.chunks.append(len(marks))
                if expect_chunks and len(marks) != expect_chunks:
                    st.error("chunk_count")
                    continue
                if marks:
                    st.first_chunk.append(marks[0] - t0)
                    st.gaps.extend(b - a for a, b in zip(marks, marks[1:], strict=False))
            st.latency.append(t1 - t0)
            st.ttfb.append(ttfb)

    cpu0 = os.times()
    t_start = time.perf_counter()
    deadline[0] = t_start + duration
    greenlets = [gevent.spawn(worker, i, c) for i, c in enumerate(conns)]
    start.set()
    gevent.joinall(greenlets, timeout=duration + timeout + 5)
    elapsed = time.perf_counter() - t_start
    cpu1 = os.times()
    for c in conns:
        c.close()
    out = summarize(st, elapsed)
    out["driver_cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3)
    out["concurrency"] = concurrency
    return out


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def _ms(values: list[float], ps: tuple[float, ...] = (50, 90, 99)) -> dict:
    out = {f"p{p:g}": round(pct(values, p) * 1000, 3) if values else None for p in ps}
    out["max"] = round(max(values) * 1000, 3) if values else None
    out["mean"] = round(sum(values) / len(values) * 1000, 3) if values else None
    return out


def summarize(st: Stats, elapsed: float) -> dict:
    ok = len(st.latency)
    out = {
        "sent": st.sent,
        "ok": ok,
        "errors": sum(st.errors.values()),
        "error_kinds": st.errors,
        "elapsed_s": round(elapsed, 3),
        "rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "latency_ms": _ms(st.latency),
        "ttfb_ms": _ms(st.ttfb),
        "max_inflight": st.max_inflight,
    }
    if st.chunks:
        out["stream"] = {
            "first_chunk_ms": _ms(st.first_chunk),
            "chunks_min": min(st.chunks),
            "chunks_max": max(st.chunks),
            "gap_ms": {
                **_ms(st.gaps, (1, 5, 50, 99)),
                "min": round(min(st.gaps) * 1000, 3) if st.gaps else None,
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Closed-loop HTTP load driver (gevent, raw sockets).")
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", help="request body (JSON text); omitted = GET")
    ap.add_argument("--header", action="append", default=[], help="Name: value (repeatable)")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-n", "--requests", type=int, default=1000)
    ap.add_argument("-d", "--duration", type=float, default=60.0, help="time cap in seconds")
    ap.add_argument("--stream", action="store_true", help="time stream content chunks")
    ap.add_argument("--expect-chunks", type=int, default=0, help="a stream with another count is an error")
    ap.add_argument("--timeout", type=float, default=30.0, help="socket timeout")
    ap.add_argument(
        "--ramp", type=float, default=0.0, help="spread the first requests over this many seconds"
    )
    ap.add_argument("--unique", default="", help="a marker (>= 12 characters) in the body made unique per "
                    "request")
    args = ap.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = run(
        args.url,
        args.body.encode() if args.body is not None else None,
        concurrency=args.concurrency,
        requests=args.requests,
        duration=args.duration,
        headers=headers,
        stream=args.stream,
        expect_chunks=args.expect_chunks,
        timeout=args.timeout,
        ramp=args.ramp,
        unique=args.unique.encode(),
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
