"""One client request as the inspector and the transforms see it, while it is served.

``Exchange`` (one per data-plane request, ``Trace.hook``) is what the relay calls: ``attempt`` gives each
upstream call a transport with an ``AttemptTap`` on it (header and request transforms, and a record of the
exchange), ``answer`` / ``chunk`` apply the response transforms to what goes back to the client (and
record the client's stream). Recording only keeps references to bytes the request path made anyway and
``time.monotonic()`` stamps: parsing, redaction and serialization happen later, in the ring's flusher
(``proxy.inspect.record``), off the request's path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy import transforms as tf

MAX_CHUNKS = 20_000  # client stream items kept per capture

if TYPE_CHECKING:
    import socket
    import ssl

    from proxy.config import TargetConfig
    from proxy.providers.http import Transport


class AttemptTap:
    """One upstream call (``proxy.providers.http.Tap``): transforms its request, records its exchange."""

    def __init__(self, exchange: Exchange, target: TargetConfig, key_id: str, rules: tf.Transforms) -> None:
        # no reference back to the exchange: no cycle, so a flushed capture is freed at once (refcounts),
        # not by the garbage collector's full passes
        self.target, self.key_id, self.rules = target, key_id, rules
        self.request_id, self.client_headers = exchange.request_id, exchange.client_headers
        self.record, self.keep_bytes = exchange.store, exchange.keep_bytes
        self.started_at = time.time()
        self.t0 = time.monotonic()
        self.t_connected: float | None = None
        self.t_sent: float | None = None
        self.t_head: float | None = None
        self.t_end: float | None = None
        self.reused = False
        self.server_ip: str | None = None
        self.method = ""
        self.url = ""
        self.raw = b""  # the request as sent: head and body
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.pieces: list[tuple[float, bytes]] = []  # (arrival, decoded body bytes)
        self.kept = 0  # bytes in pieces
        self.cut = False  # pieces stopped at the capture limit

    # -- Tap -----------------------------------------------------------------------------------------

    def request(self, method: str, url: str, headers: dict[str, str],
                body: dict | None) -> tuple[dict[str, str], dict | None, frozenset[str]]:
        self.t0 = time.monotonic()
        self.method, self.url = method, url
        omit: frozenset[str] = frozenset()
        if self.rules.headers is not None:
            headers, omit = tf.upstream_headers(self.rules.headers, headers, self.client_headers)
        if self.rules.request and body is not None:
            body = tf.apply_rules(self.rules.request, body, self.request_id)
        return headers, body, omit

    def connected(self, sock: socket.socket | ssl.SSLSocket, reused: bool) -> None:
        self.t_connected = time.monotonic()
        self.reused = reused
        if self.record:
            try:
                self.server_ip = str(sock.getpeername()[0])
            except (OSError, IndexError):
                pass

    def sent(self, raw: bytes) -> None:
        self.t_sent = time.monotonic()
        if self.record:
            self.raw = raw

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.t_head = time.monotonic()
        self.status, self.headers = status, headers

    def data(self, chunk: bytes) -> None:
        now = time.monotonic()
        if not chunk:
            self.t_end = self.t_end or now
            return
        if not self.record:
            return
        if self.kept < self.keep_bytes:
            self.pieces.append((now, chunk))
            self.kept += len(chunk)
        else:
            self.cut = True


@dataclass
class Exchange:
    """What one client request needs from the inspector while it is served (``Trace.hook``)."""

    request_id: str
    model: str | None
    client_id: str | None
    client_headers: Any  # (name, value) pairs as the client sent them (the request's own Headers at first)
    model_transforms: tf.Transforms | None
    provider_transforms: dict[str, tf.Transforms | None]
    store: bool  # record this exchange in the ring
    log_bodies: bool  # the request log line carries the client's bodies
    keep_bytes: int  # per body, what the recording keeps (a little over max_body_bytes: cut later)
    secrets: tuple[str, ...] = ()  # besides the config's: the client key this request presented
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)
    attempts: list[AttemptTap] = field(default_factory=list)
    chunks: list[tuple[float, Any]] = field(default_factory=list)  # the client's stream, as relayed
    chunks_cut: bool = False  # past MAX_CHUNKS (record.py cuts at max_body_bytes)
    t_response: float | None = None
    method: str = ""
    path: str = ""
    query: str = ""
    body: bytes = b""
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes | None = None
    stream: bool = False

    @property
    def recording(self) -> bool:
        return self.store or self.log_bodies

    def rules_for(self, target: TargetConfig) -> tf.Transforms:
        """The target provider's transforms, with the requested model's sections winning."""
        return tf.merge(self.provider_transforms.get(target.provider), self.model_transforms)

    # -- the relay's hooks ---------------------------------------------------------------------------

    def attempt(self, target: TargetConfig, key_id: str, transport: Transport) -> Transport:
        """The transport for one upstream attempt, with this request's tap on it."""
        tap = AttemptTap(self, target, key_id, self.rules_for(target))
        self.attempts.append(tap)
        return transport.tapped(tap)

    def _response_rules(self) -> tuple[tf.BodyRule, ...]:
        if not self.attempts:
            return ()
        return self.attempts[-1].rules.response or ()

    def answer(self, item: Any) -> Any:
        """A whole answer on its way to the client: the response transforms applied."""
        rules = self._response_rules()
        return _map_payload(item, lambda d: tf.apply_rules(rules, d, self.request_id)) if rules else item

    def chunk(self, item: Any) -> Any:
        """One stream item on its way to the client: transformed, and recorded."""
        item = self.answer(item)
        if self.recording and not self.chunks_cut:
            payload = _payload(item)
            if payload is not None:
                self.chunks.append((time.monotonic(), payload))
                self.chunks_cut = len(self.chunks) >= MAX_CHUNKS
        return item


def _payload(item: Any) -> Any:
    """The JSON part of a stream item: a dict, or the last dict of a (tag, ...) tuple."""
    if isinstance(item, dict):
        return item
    if isinstance(item, tuple) and item:
        return _payload(item[-1])
    return None


def _map_payload(item: Any, fn: Any) -> Any:
    if isinstance(item, dict):
        return fn(item)
    if isinstance(item, tuple) and item:
        return (*item[:-1], _map_payload(item[-1], fn))
    return item


