"""``Inspector`` (one per worker, ``Gateway.inspector``): decides which requests are captured, carries each
capture from the request to the ring in the store, and reads the ring for the admin API.

- **Which**: ``inspector.enabled``, the request's model matches ``models`` (globs; empty: all), its client
  is in ``clients`` (ids; empty: all), and the request id hashes below ``sample`` (sha256 of the id as a
  fraction of 2^64: the same id is always decided the same way, ids spread evenly). A request with
  transforms to apply, or ``logging.bodies``, gets an ``Exchange`` too, recorded only when captured.
- **Off the hot path**: while the request is served its capture only keeps references and times
  (``capture.py``). When it ended, the capture is queued (at most ``MAX_QUEUE``; past it captures are
  dropped and counted); a background flusher every ``FLUSH_INTERVAL_S`` builds the documents (parse,
  redact, cut, serialize: ``record.py``) and writes them in one transaction, which also trims the ring to
  ``max_entries`` / ``max_bytes`` (at most MAX_BATCH captures, about MAX_BATCH_BYTES, per transaction:
  the write lock is never held long). A locked database keeps the queue for the next flush.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from proxy.background import Periodic
from proxy.clients.auth import presented_key
from proxy.inspect import record
from proxy.inspect.capture import Exchange
from proxy.observability import quiet
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.inspector import InspectorTx

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.relay import Trace

log = logging.getLogger("keyrelay")

FLUSH_INTERVAL_S = 0.25
MAX_QUEUE = 2000  # finished captures waiting for the flusher per worker
MAX_QUEUE_BYTES = 64 * 1024 * 1024  # and the bytes they hold (about)
MAX_BATCH = 100  # captures per flush transaction
MAX_BATCH_BYTES = 1024 * 1024  # and about the bytes they hold: the write lock is held a few ms at most


def sampled(request_id: str, sample: float) -> bool:
    """Deterministic sampling: the request id's hash as a fraction in [0, 1) below ``sample``."""
    if sample >= 1.0:
        return True
    if sample <= 0.0:
        return False
    h = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return h / 2**64 < sample


def held_bytes(ex: Exchange) -> int:
    """About how much memory a finished capture holds until it is flushed."""
    return (len(ex.body) + len(ex.response_body or b"") + 256 * len(ex.chunks)
            + sum(len(t.raw) + t.kept for t in ex.attempts))


class Inspector:
    def __init__(self, config: Config, store: KeyStore, *,
                 flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.config, self.settings, self.store = config, config.inspector, store
        self.flush_interval_s = flush_interval_s
        self.secrets = tuple(config.secrets())
        self.provider_transforms = {p.name: p.transforms for p in config.providers}
        self.any_transforms = any(p.transforms for p in config.providers) or \
            any(m.transforms for m in config.models)
        self._queue: list[tuple[Exchange, Any, float, int]] = []
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flusher = Periodic("keyrelay-inspector", flush_interval_s, self.flush, "inspector flush")
        self._closed = False
        self.dropped = 0

    # -- the request path ----------------------------------------------------------------------------

    def wanted(self, request_id: str, model: str | None, client_id: str | None) -> bool:
        s = self.settings
        if not s.enabled:
            return False
        if s.models and not (model and any(fnmatch.fnmatchcase(model, g) for g in s.models)):
            return False
        if s.clients and client_id not in s.clients:
            return False
        return sampled(request_id, s.sample)

    def begin(self, request_id: str, model: str | None, client_id: str | None, headers: Any,
              started: float | None = None) -> Exchange | None:
        """The Exchange of a request being served (None when nothing is captured, logged or transformed)."""
        store = self.wanted(request_id, model, client_id)
        log_bodies = self.config.logging.bodies
        if not (store or log_bodies or self.any_transforms):
            return None
        model_cfg = self.config.model(model) if model else None
        recording = store or log_bodies
        presented = presented_key(headers) if recording else None
        ex = Exchange(
            request_id=request_id, model=model, client_id=client_id,
            client_headers=headers,
            model_transforms=model_cfg.transforms if model_cfg else None,
            provider_transforms=self.provider_transforms, store=store, log_bodies=log_bodies,
            keep_bytes=4 * self.settings.max_body_bytes + 65536, secrets=(presented,) if presented else (),
        )
        if started is not None:
            ex.t0 = started
        return ex

    def response(self, state: Any, request: Any, resp: Any) -> Exchange | None:
        """The client's side of a data-plane request, at its response head (``state`` is flask.g). One
        refused before it was traced (400, 401, 413...) gets an Exchange here when it is captured."""
        trace = state.get("trace")
        ex = trace.hook if trace is not None else None
        if ex is None:
            request_id = state.get("request_id", "")
            if trace is not None or self.settings.models or self.settings.clients \
                    or not self.wanted(request_id, None, None):
                return None
            ex = self.begin(request_id, None, None, request.headers, state.get("started"))
            if ex is None or not ex.store:
                return None
        if not ex.recording:
            return ex
        ex.t_response = time.monotonic()
        ex.started_at = state.get("wall_started") or ex.started_at
        ex.client_headers = list(request.headers.items())
        ex.method, ex.path = request.method, request.path
        ex.query = request.query_string.decode("latin-1")
        # only a body the request already read (never read one here: a refused body stays unread)
        ex.body = state.get("_body") or getattr(request, "_cached_data", None) or b""
        ex.status = resp.status_code
        ex.response_headers = list(resp.headers.items())
        ex.stream = bool(resp.is_streamed)
        if not ex.stream:
            ex.response_body = resp.get_data()
        return ex

    def done(self, ex: Exchange, trace: Trace | None, entry: dict) -> None:
        """The request ended (a stream: its last byte): log its bodies if asked, queue the capture."""
        now = time.monotonic()
        if ex.log_bodies:
            client = record.client_doc(ex, now, self.settings, (*self.secrets, *ex.secrets))
            entry["request_body"] = (client["request"]["body"] or {}).get("text")
            entry["response_body"] = (client["response"]["body"] or {}).get("text")
        if not ex.store:
            return
        size = held_bytes(ex)
        with self._lock:
            if len(self._queue) < MAX_QUEUE and self._queued_bytes + size <= MAX_QUEUE_BYTES:
                self._queue.append((ex, trace, now, size))
                self._queued_bytes += size
                return
            self.dropped += 1
        log.warning("inspector capture dropped: the flush queue is full",
                    extra={"event": "inspector_dropped", "request_id": ex.request_id})

    # -- the flusher ---------------------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _row(self, ex: Exchange, trace: Trace | None, t_done: float) -> tuple:
        secrets = tuple(sorted({*self.secrets, *ex.secrets}, key=len, reverse=True))
        doc = record.transaction(ex, trace, t_done, self.settings, secrets)
        data = record.encode(doc, secrets)
        return (ex.started_at, ex.request_id, ex.model or "", ex.client_id or "", doc["route"], ex.status,
                doc["outcome"], doc["duration_ms"], len(data), data)

    def flush(self, timeout: float | None = None) -> bool:
        if not self._flush_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            while True:
                with self._lock:
                    n, held = 0, 0
                    while n < min(MAX_BATCH, len(self._queue)) and (n == 0 or held < MAX_BATCH_BYTES):
                        held += self._queue[n][3]
                        n += 1
                    batch, self._queue = self._queue[:n], self._queue[n:]
                    self._queued_bytes -= held
                if not batch:
                    return True
                rows = []
                for ex, trace, t_done, _size in batch:
                    try:
                        rows.append(self._row(ex, trace, t_done))
                    except Exception:  # one capture that cannot be built must not hold the others
                        log.exception("inspector capture failed", extra={"event": "inspector_error",
                                                                         "request_id": ex.request_id})
                    time.sleep(0)  # let the worker's requests run between documents (gevent)
                try:
                    with self.store.transaction(timeout) as tx:
                        cast(InspectorTx, tx).add_captures(rows, self.settings.max_entries,
                                                           self.settings.max_bytes)
                except StoreUnavailable as exc:
                    with self._lock:
                        self._queue[:0] = batch
                        self._queued_bytes += sum(b[3] for b in batch)
                    quiet.warn(log, "inspector_deferred", "inspector flush deferred: %s", exc)
                    return False
        finally:
            self._flush_lock.release()

    def start(self) -> None:
        if self.settings.enabled and not self._closed:
            self._flusher.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._flusher.stop()
        try:
            self.flush(timeout=2.0)
        except Exception:
            log.exception("inspector flush at close failed")

    # -- reads (admin API) ---------------------------------------------------------------------------

    def entries(self, limit: int, model: str | None = None, client_id: str | None = None,
                status: tuple[int, int] | None = None, since: float | None = None,
                docs: bool = False) -> list[dict]:
        self.flush(timeout=0.25)  # this worker's queue first; other workers' within one interval
        with self.store.snapshot() as tx:
            return cast(InspectorTx, tx).captures(limit, model, client_id, status, since, docs)

    def entry(self, entry_id: int) -> dict | None:
        self.flush(timeout=0.25)
        with self.store.snapshot() as tx:
            return cast(InspectorTx, tx).capture(entry_id)

    def clear(self) -> int:
        with self._lock:
            self._queue.clear()
            self._queued_bytes = 0
        with self.store.transaction() as tx:
            return cast(InspectorTx, tx).clear_captures()

    def totals(self) -> dict:
        with self.store.snapshot() as tx:
            return cast(InspectorTx, tx).capture_totals()
