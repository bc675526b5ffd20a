"""``ResponseCache``: one per worker (``Gateway.cache``); every entry lives in the shared store.

A request's ``Lookup`` (``begin``): the plan (``policy``), the key (``key``), the stored answer on a
HIT. After the relay answered, ``keep`` stores a complete answer; ``keep_chunks`` (OpenAI chunks),
``keep_frames`` (Anthropic SSE frames) and ``keep_gemini`` (Gemini events' JSON) pass a stream through
and store it only when it ended complete (a stream that ended with an error, was cut short or left by
its client is not stored). A store that cannot be reached within its short wait makes a MISS and skips
the store: the cache never fails a request.

A lookup is a read without the write lock. What hits change (an entry's last use for the LRU order,
the hit / miss counters, entries found expired) is batched per worker and written every
``FLUSH_INTERVAL_S`` by a background flusher, and at once by this worker's next store (in the same
transaction, before it evicts anything): the LRU order across workers lags by at most one interval.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from proxy.background import Periodic
from proxy.cache import policy
from proxy.cache.key import SHORT, cache_key
from proxy.cache.policy import HIT, Plan
from proxy.cache.replay import assemble_chunks, assemble_events, assemble_gemini
from proxy.clients.model import Client
from proxy.config import Config
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.cache import CacheTx

log = logging.getLogger("keyrelay")

LOOKUP_WAIT_S = 0.25  # the admin view's wait for this worker's flush
STORE_WAIT_S = 0.5
FLUSH_INTERVAL_S = 0.25
MAX_PENDING = 10_000  # distinct entries whose use waits for the flush; past it, uses go unrecorded
ANONYMOUS = "anonymous"  # the scope of requests without a client (open gateway) under scope: client


@dataclass
class Lookup:
    """What the cache did and does for one request; ``status`` None: no cache is configured."""

    cache: ResponseCache | None = None
    plan: Plan | None = None
    endpoint: str = ""
    model: str = ""
    key: str | None = None
    raw: bytes | None = field(default=None, repr=False)  # the stored answer (JSON) on a HIT
    _answer: dict | None = field(default=None, repr=False)

    @property
    def hit(self) -> bool:
        return self.raw is not None

    @property
    def answer(self) -> dict:
        """A HIT's stored answer, parsed (a stream replay needs it; a JSON answer is ``raw`` as it is)."""
        if self.raw is None:
            raise LookupError("not a cache hit")
        if self._answer is None:
            self._answer = orjson.loads(self.raw)
        return self._answer

    @property
    def status(self) -> str | None:
        if self.hit:
            return HIT
        return self.plan.status if self.plan else None

    def headers(self) -> dict[str, str]:
        status = self.status
        if status is None:
            return {}
        out = {"x-keyrelay-cache": status}
        if self.key and status in (HIT, policy.MISS):
            out["x-keyrelay-cache-key"] = self.key[:SHORT]
        return out

    @property
    def storing(self) -> bool:
        return self.cache is not None and self.plan is not None and self.plan.store and not self.hit

    def keep(self, answer: dict) -> dict:
        """Store a complete answer (when this request stores); returns it unchanged."""
        if self.storing:
            assert self.cache is not None
            try:
                self.cache.put(self, answer)
            except Exception:  # the answer is given whatever happens to its copy
                log.exception("cache store failed", extra={"event": "cache_error"})
        return answer

    def keep_chunks(self, chunks: Iterator[dict]) -> Iterator[dict]:
        """OpenAI chunks, passed through; the completion they make is stored once the stream ended
        complete (every choice with a finish reason)."""
        return self._tap(chunks, assemble_chunks) if self.storing else chunks

    def keep_frames(self, frames: Iterator[bytes]) -> Iterator[bytes]:
        """Anthropic SSE frames (one event each), passed through; the message they make is stored once
        the stream ended with ``message_stop`` and no ``error`` event."""
        return self._tap(frames, lambda seen: assemble_events(_frame(f) for f in seen)) if self.storing \
            else frames

    def keep_gemini(self, events: Iterator[bytes]) -> Iterator[bytes]:
        """Gemini stream events (each one event's JSON), passed through; the ``generateContent`` answer
        they make is stored once the stream ended with every candidate finished and no error event."""
        return self._tap(events, lambda seen: assemble_gemini(orjson.loads(e) for e in seen)) \
            if self.storing else events

    def _tap(self, items: Iterator[Any], assemble: Callable[[list], dict | None]) -> Iterator[Any]:
        seen: list = []
        try:
            for item in items:
                seen.append(item)
                yield item
        finally:
            closer = getattr(items, "close", None)
            if closer is not None:
                closer()
        # here only when the stream ended by itself: an error or a client gone raised past this point
        answer = assemble(seen)
        if answer is not None:
            self.keep(answer)


def _frame(frame: bytes) -> tuple[str, dict]:
    event, data = "", {}
    for line in frame.split(b"\n"):
        if line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            data = orjson.loads(line[6:])
    return event, data


Batch = tuple[dict[str, tuple[float, int]], dict[str, int], set[str]]  # used, counts, expired


class ResponseCache:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float] = time.time, *,
                 flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.active = policy.any_cache(config)
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._pending: Batch = ({}, {}, set())
        self._flusher = Periodic("keyrelay-cache-flush", flush_interval_s, self.flush, "cache flush")
        self._closed = False
        from proxy.cache import metrics  # lazily: see proxy/cache/metrics.py
        self.metrics = metrics

    def begin(self, endpoint: str, body: dict, headers: Any, client: Client | None, model: str) -> Lookup:
        """Plan one request and, unless it bypasses or refreshes, look its answer up."""
        if not self.active:
            return Lookup()
        settings = policy.settings_for(self.config, model)
        plan = policy.plan(settings, body, headers.get("Cache-Control"), headers.get(policy.TTL_HEADER))
        look = Lookup(self, plan, endpoint, model)
        if plan.settings is None:  # BYPASS
            self.metrics.REQUESTS.labels("bypass").inc()
            return look
        scope = (client.id if client else ANONYMOUS) if plan.settings.scope == "client" else ""
        look.key = cache_key(endpoint, body, scope)
        if plan.lookup:
            look.raw = self._get(look.key)
        self.metrics.REQUESTS.labels(look.status.lower() if look.status else "bypass").inc()
        return look

    def _get(self, key: str) -> bytes | None:
        """The live answer under ``key`` (its use batched for the flush), else None."""
        now = self.clock()
        try:
            with self.store.snapshot() as tx:
                row = cast(CacheTx, tx).cache_get(key)
        except StoreUnavailable as exc:
            log.warning("cache lookup skipped: %s", exc, extra={"event": "cache_unavailable"})
            row = None
        with self._lock:
            used, counts, expired = self._pending
            if row is not None and row[1] > now:
                at, hits = used.get(key, (now, 0))
                if hits or len(used) < MAX_PENDING:
                    used[key] = (max(at, now), hits + 1)
                counts["hits"] = counts.get("hits", 0) + 1
                return row[0]
            if row is not None and len(expired) < MAX_PENDING:
                expired.add(key)
            counts["misses"] = counts.get("misses", 0) + 1
        return None

    def _take(self) -> Batch:
        with self._lock:
            batch, self._pending = self._pending, ({}, {}, set())
        return batch

    def _give_back(self, batch: Batch) -> None:
        """A batch that could not be written goes back in front of what came meanwhile."""
        with self._lock:
            used, counts, expired = self._pending
            for key, (at, hits) in batch[0].items():
                now_at, now_hits = used.get(key, (at, 0))
                used[key] = (max(at, now_at), hits + now_hits)
            for name, n in batch[1].items():
                counts[name] = counts.get(name, 0) + n
            expired |= batch[2]

    def flush(self, timeout: float | None = STORE_WAIT_S) -> bool:
        """Write this worker's batched uses and counters; False (kept for later) on a locked store."""
        batch = self._take()
        if not any(batch):
            return True
        try:
            with self.store.transaction(timeout=timeout) as tx:
                cast(CacheTx, tx).cache_touch(*batch, self.clock())
        except StoreUnavailable:
            self._give_back(batch)
            return False
        return True

    def start(self) -> None:
        """The background flusher (gunicorn's post_worker_init, via Gateway.start_background)."""
        if self.active and not self._closed:
            self._flusher.start()

    def close(self) -> None:
        self._closed = True
        self._flusher.stop()
        try:
            self.flush()
        except Exception:
            log.exception("cache flush at close failed")

    def put(self, look: Lookup, answer: dict) -> None:
        assert look.key is not None and look.plan is not None
        settings = self.config.cache
        raw = orjson.dumps(answer)
        if len(raw) > settings.max_bytes:
            return  # larger than the whole cache: it would only evict everything else
        now = self.clock()
        batch = self._take()  # this worker's uses first: the eviction below sees them
        try:
            with self.store.transaction(timeout=STORE_WAIT_S) as tx:
                ctx = cast(CacheTx, tx)
                ctx.cache_touch(*batch, now)
                evicted = ctx.cache_put(look.key, look.endpoint, look.model, raw, now, now + look.plan.ttl_s,
                                        settings.max_entries, settings.max_bytes)
        except StoreUnavailable as exc:
            self._give_back(batch)
            log.warning("cache store skipped: %s", exc, extra={"event": "cache_unavailable"})
            return
        self.metrics.STORES.inc()
        self.metrics.STORED_BYTES.inc(len(raw))
        if evicted:
            self.metrics.EVICTIONS.inc(evicted)

    def stats(self) -> dict:
        """``GET /admin/api/cache``: counts, size, bounds, hit ratio (over every worker, from the store;
        this worker's batch is written first, the others' are at most one flush interval old)."""
        self.flush(timeout=LOOKUP_WAIT_S)
        with self.store.snapshot() as tx:
            totals = cast(CacheTx, tx).cache_totals()
        looked = totals.get("hits", 0) + totals.get("misses", 0)
        return {"enabled": self.active, **totals, "max_entries": self.config.cache.max_entries,
                "max_bytes": self.config.cache.max_bytes,
                "hit_ratio": round(totals.get("hits", 0) / looked, 4) if looked else None}

    def totals(self) -> dict[str, int]:
        try:
            with self.store.snapshot() as tx:
                return cast(CacheTx, tx).cache_totals()
        except StoreUnavailable:
            return {}

    def clear(self) -> int:
        with self.store.transaction() as tx:
            return cast(CacheTx, tx).cache_clear()
