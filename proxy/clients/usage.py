"""Usage records (one per data-plane request, written in batches), cost from prices, daily rollups.

* **Cost** (``cost``): ``config.prices`` is USD per 1M tokens. The price of a request is looked up for
  the upstream model that answered (``done.upstream_model``) first, then for the model the client asked
  for (``done.model``): exact names first (both candidates), then glob patterns (``*``, ``?``, ``[...]``,
  case-sensitive) in config order, first match wins. Cached prompt tokens cost ``cached_input`` when it
  is given, else ``input``; reasoning tokens are part of the completion. With no config price, the model
  catalog's price of the upstream model that answered is used (``fallback_price``, ``proxy.catalog``).
  A request that used tokens of a model without a price has ``cost_usd = None`` (counted in
  ``keyrelay_usage_unpriced_total{model}``, shown as ``unpriced_requests`` in reports) — never a silent $0;
  a request that used no tokens costs 0.
* **Records** (``record``): queued in memory and written by a background flusher every
  ``flush_interval_s`` (0.5 s; a greenlet under gevent) in one transaction per batch of at most
  ``MAX_BATCH`` rows, together with the daily rollups (per local day in ``accounting.timezone``, client,
  model). A flush that meets a locked database keeps its rows for the next one; at most ``MAX_QUEUE``
  rows wait, further records are dropped and counted in ``keyrelay_usage_dropped_total`` (and logged).
  A worker killed with ``kill -9`` loses what it had not flushed: at most one flush interval of its
  records. ``close()`` (gunicorn's ``worker_exit``) flushes.
* **Retention**: raw rows older than ``accounting.retention_days`` are deleted every ``PURGE_INTERVAL_S``
  in small transactions (``PURGE_BATCH`` rows each); rollups are kept.
* **Reports** (``report``): grouped by day / client / model, every whole local day of the range comes
  from the rollups (fast: one row per day, client and model) and the partial days at its edges from raw
  rows, exact to the second. Raw rows before ``raw_since()`` (the first local midnight from which none
  was purged) may be gone: a range starting earlier is widened to whole days there. Grouped by route or
  key (raw rows only) the range must start after ``raw_since()`` (else ValueError → 400).
"""
from __future__ import annotations

import fnmatch
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from proxy.background import Periodic, claim
from proxy.clients.model import Client, Finished, period_bounds
from proxy.config import Config, PriceConfig
from proxy.observability import quiet
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.usage import GROUPS, ROLLUP_GROUPS, SUM_FIELDS, UsageTx

log = logging.getLogger("keyrelay")

FLUSH_INTERVAL_S = 0.5
MAX_BATCH = 500  # rows per flush transaction: the write lock is held ~3-6 ms (admissions wait for it)
MAX_QUEUE = 100_000  # unflushed rows per worker; past it records are dropped (and counted)
PURGE_INTERVAL_S = 300.0
PURGE_BATCH = 1000
PURGE_ROUNDS = 20  # per purge run: at most PURGE_ROUNDS * PURGE_BATCH rows, the rest next time
READ_FLUSH_WAIT_S = 0.25  # reports flush this worker's queue first; a locked database only makes them stale
ANONYMOUS = "anonymous"  # the client label of requests without a client (open gateway)
_GLOB_CHARS = frozenset("*?[")


class UsageLog:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float] = time.time, *,
                 flush_interval_s: float = FLUSH_INTERVAL_S, max_queue: int = MAX_QUEUE) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.tz = config.accounting.timezone
        self._zone = ZoneInfo(self.tz)
        self.retention_s = config.accounting.retention_days * 86400.0
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self._exact = {m: p for m, p in config.prices.items() if not _GLOB_CHARS & set(m)}
        self._globs = [(m, p) for m, p in config.prices.items() if _GLOB_CHARS & set(m)]
        self._price_cache: dict[str, PriceConfig | None] = {}
        # (provider, upstream model) -> price, when the config has none (Gateway: the model catalog)
        self.fallback_price: Callable[[str | None, str | None], PriceConfig | None] | None = None
        self._queue: list[tuple] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time per worker (keeps rows in order)
        self._flusher = Periodic("keyrelay-usage-flush", flush_interval_s, self._round, "usage flush")
        self._closed = False
        self._last_purge = -math.inf
        self._dropped_logged_at = -math.inf
        self.dropped = 0
        # imported here, like create_app does: prometheus_client picks multiprocess mode at import time
        from proxy.observability import metrics
        self.metrics = metrics

    # --- cost ----------------------------------------------------------------------------------

    def price(self, name: str) -> PriceConfig | None:
        if name in self._price_cache:
            return self._price_cache[name]
        found = self._exact.get(name)
        if found is None:
            found = next((p for pattern, p in self._globs if fnmatch.fnmatchcase(name, pattern)), None)
        if len(self._price_cache) < 4096:  # model names may come from clients: stay bounded
            self._price_cache[name] = found
        return found

    def price_for(self, done: Finished) -> PriceConfig | None:
        names = [n for n in (done.upstream_model, done.model) if n]
        for n in names:  # exact names of both candidates before any glob
            if n in self._exact:
                return self._exact[n]
        for n in names:
            p = self.price(n)
            if p is not None:
                return p
        return self.fallback_price(done.provider, done.upstream_model) if self.fallback_price else None

    def cost(self, done: Finished) -> float | None:
        """USD for ``done``'s tokens, or None when the model has no price (never a silent $0)."""
        u = done.usage
        if u is None or (u.prompt == 0 and u.completion == 0):
            return 0.0
        p = self.price_for(done)
        if p is None:
            return None
        cached = min(u.cached, u.prompt)
        cached_price = p.input if p.cached_input is None else p.cached_input
        return ((u.prompt - cached) * p.input + cached * cached_price + u.completion * p.output) / 1e6

    # --- records -------------------------------------------------------------------------------

    def day_of(self, at: float) -> str:
        return datetime.fromtimestamp(at, self._zone).date().isoformat()

    def record(self, done: Finished, cost_usd: float | None) -> None:
        """Queue one usage record; the background flush writes the queue in one transaction."""
        c, u = done.client, done.usage
        prompt, completion = (u.prompt, u.completion) if u else (0, 0)
        cached, reasoning = (u.cached, u.reasoning) if u else (0, 0)
        row = (done.at, self.day_of(done.at), done.request_id, done.endpoint, c.id if c else "",
               c.name if c else None, c.team if c else None, done.model or "", done.provider,
               done.upstream_model, done.key_id, int(done.status), done.outcome, prompt, completion, cached,
               reasoning, cost_usd, round(done.latency_ms, 3),
               None if done.first_byte_ms is None else round(done.first_byte_ms, 3), 1 if done.stream else 0,
               1 if done.cached else 0)
        with self._lock:
            full = len(self._queue) >= self.max_queue
            if not full:
                self._queue.append(row)
            else:
                self.dropped += 1
        if full:
            self.metrics.USAGE_DROPPED.inc()
            now = time.monotonic()
            if now - self._dropped_logged_at > 60:
                self._dropped_logged_at = now
                log.error("usage records dropped: %d unflushed (database unavailable)", self.max_queue,
                          extra={"event": "usage_dropped", "dropped_total": self.dropped})
        self._count(done, cost_usd)

    def _count(self, done: Finished, cost_usd: float | None) -> None:
        metrics = self.metrics
        client = done.client.id if done.client else ANONYMOUS
        model = metrics.model_label(done.model or "")
        child = metrics.child
        child(metrics.CLIENT_REQUESTS, client, model, str(done.status)).inc()
        u = done.usage
        if u is not None:
            for kind, n in (("prompt", u.prompt), ("completion", u.completion), ("cached", u.cached),
                            ("reasoning", u.reasoning)):
                if n:
                    child(metrics.CLIENT_TOKENS, client, model, kind).inc(n)
        if cost_usd is None:
            child(metrics.USAGE_UNPRICED, metrics.model_label(done.upstream_model or done.model or "")).inc()
        elif cost_usd > 0:
            child(metrics.CLIENT_COST, client, model).inc(cost_usd)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self, timeout: float | None = None) -> bool:
        """Write what is queued (batches of ``MAX_BATCH``, each with its rollups, in one transaction).
        On a locked database the unwritten rows go back in front of the queue. True when all was written.
        With a ``timeout``, waiting for another flush of this worker counts against it too."""
        if not self._flush_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            return self._flush(timeout)
        finally:
            self._flush_lock.release()

    def _flush(self, timeout: float | None) -> bool:
        first = True
        while True:
            with self._lock:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if not batch:
                return True
            if not first:
                time.sleep(0)  # a backlog: let this worker's requests run between batches (gevent)
            first = False
            try:
                with self.store.transaction(timeout) as tx:
                    cast(UsageTx, tx).add_usage(batch, rollups(batch))
            except StoreUnavailable as exc:
                with self._lock:
                    self._queue[:0] = batch  # may exceed max_queue by one batch; record() then drops
                quiet.warn(log, "usage_flush_deferred", "usage flush deferred: %s", exc,
                           extra={"pending": len(self._queue)})
                return False

    def purge(self, now: float | None = None) -> int:
        """Delete raw rows past retention, in small transactions; how many were deleted."""
        before = (self.clock() if now is None else now) - self.retention_s
        total = 0
        for _ in range(PURGE_ROUNDS):
            with self.store.transaction() as tx:
                n = cast(UsageTx, tx).purge_usage(before, PURGE_BATCH)
            total += n
            if n < PURGE_BATCH:
                break
        return total

    def start(self) -> None:
        """Start the flusher (gunicorn's post_worker_init, via Gateway.start_background)."""
        if not self._closed:
            self._flusher.start()

    def _round(self) -> None:
        try:
            self.flush()
            mono = time.monotonic()
            if mono - self._last_purge >= PURGE_INTERVAL_S:
                self._last_purge = mono
                if claim(self.store, "usage_purge", PURGE_INTERVAL_S * 0.9):  # one worker of all instances
                    self.purge()
        except StoreUnavailable as exc:
            log.warning("usage purge deferred: %s", exc)

    def close(self) -> None:
        """Flush what is queued and stop."""
        if self._closed:
            return
        self._closed = True
        self._flusher.stop()
        try:
            self.flush()
        except Exception:
            log.exception("usage flush at close failed", extra={"event": "usage_error"})

    # --- reports -------------------------------------------------------------------------------

    def raw_since(self, now: float | None = None) -> float:
        """The first local midnight from which every raw row is still kept (earlier days: rollups)."""
        now = self.clock() if now is None else now
        return period_bounds("day", now - self.retention_s, self.tz)[1]

    def report(self, start: float, end: float, groups: Sequence[str] = ("day",), client: str | None = None,
               model: str | None = None, now: float | None = None, *,
               client_id: str | None = None) -> list[dict]:
        """Rows of ``{<group fields>, requests, errors, prompt_tokens, completion_tokens, cached_tokens,
        reasoning_tokens, cost_usd, unpriced_requests}`` for requests that started in [start, end).
        ``cost_usd`` is None when every request of the group is unpriced; when only some are, it is the
        cost of the priced ones and ``unpriced_requests`` says how many are missing from it."""
        for g in groups:
            if g not in GROUPS:
                raise ValueError(f"unknown group {g!r}")
        self.flush(timeout=READ_FLUSH_WAIT_S)
        boundary = self.raw_since(now)
        parts: list[list[dict]] = []
        by_day = all(g in ROLLUP_GROUPS for g in groups)
        if start < boundary and not by_day:
            bad = next(g for g in groups if g not in ROLLUP_GROUPS)
            raise ValueError(f"group_by={bad} needs 'from' within the raw retention (since "
                             f"{self.iso(boundary)}); earlier days are kept as daily rollups per client "
                             "and model")
        with self.store.snapshot() as snap:
            tx = cast(UsageTx, snap)
            # whole local days from rollups (a partial day before ``boundary`` widens to the whole day,
            # its raw rows may be gone); the partial days at the edges from raw rows
            lo = self._floor_day(start) if start < boundary else self._ceil_day(start)
            hi = self._floor_day(end) if end > boundary else self._ceil_day(end)
            if by_day and lo < hi:
                parts.append(tx.usage_rollup(self.day_of(lo), self.day_of(hi - 1), groups, client, model,
                                             client_id))
                if start < lo:
                    parts.append(tx.usage_raw(start, lo, groups, client, model, client_id))
                if hi < end:
                    parts.append(tx.usage_raw(hi, end, groups, client, model, client_id))
            else:
                parts.append(tx.usage_raw(start, end, groups, client, model, client_id))
        return finish_rows(merge_rows(parts, groups))

    def _floor_day(self, at: float) -> float:
        return period_bounds("day", at, self.tz)[0]

    def _ceil_day(self, at: float) -> float:
        start, end = period_bounds("day", at, self.tz)
        return at if at == start else end

    def summary(self, client: Client, now: float | None = None) -> dict:
        """``GET /v1/key``: the client's current period (its budget's, else its quota's, else the month)."""
        now = self.clock() if now is None else now
        if client.budget_usd is not None:
            kind = client.budget_period
        elif client.token_quota is not None:
            kind = client.quota_period
        else:
            kind = "month"
        start, end = period_bounds(kind, now, self.tz)
        rows = self.report(start, end, (), now=now, client_id=client.id)
        tot = rows[0] if rows else {f: 0 for f in SUM_FIELDS}
        tokens = int(tot["prompt_tokens"]) + int(tot["completion_tokens"])
        cost = tot["cost_usd"] if rows else 0.0
        spent = cost or 0.0
        budget_left = None if client.budget_usd is None else round(max(client.budget_usd - spent, 0.0), 9)
        return {
            "period": {"kind": kind, "start": self.iso(start), "end": self.iso(end)},
            "requests": int(tot["requests"]), "tokens": tokens, "cost_usd": cost,
            "unpriced_requests": int(tot["unpriced_requests"]),
            "remaining": {
                "budget_usd": budget_left,
                "tokens": None if client.token_quota is None else max(client.token_quota - tokens, 0),
            },
        }

    def iso(self, at: float) -> str:
        return datetime.fromtimestamp(at, self._zone).isoformat()

    def parse_time(self, text: str, *, end: bool = False) -> float:
        """An ISO date (local midnight in the accounting time zone; as ``to``: the end of that day) or an
        ISO date-time (without an offset: in the accounting time zone). ValueError when neither."""
        text = text.strip()
        if len(text) == 10:
            d = date.fromisoformat(text)
            if end:
                d += timedelta(days=1)
            return datetime(d.year, d.month, d.day, tzinfo=self._zone).timestamp()
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=self._zone)
        return t.timestamp()


def rollups(batch: Sequence[tuple]) -> list[tuple]:
    """Per (day, client, model) deltas of a batch of record rows (``store.usage.ROLLUP_COLUMNS`` order)."""
    acc: dict[tuple, list] = {}
    for r in batch:
        (day, client_id, name, team, model, status) = (r[1], r[4], r[5], r[6], r[7], r[11])
        a = acc.setdefault((day, client_id, model), [name, team, 0, 0, 0, 0, 0, 0, 0.0, 0])
        a[0], a[1] = name, team
        a[2] += 1
        a[3] += 1 if status >= 400 else 0
        a[4] += r[13]
        a[5] += r[14]
        a[6] += r[15]
        a[7] += r[16]
        if r[17] is None:
            a[9] += 1
        else:
            a[8] += r[17]
    return [(*k, *v) for k, v in acc.items()]


def merge_rows(parts: list[list[dict]], groups: Sequence[str]) -> list[dict]:
    cols: list[str] = []
    for g in groups:
        cols += [c for c in GROUPS[g] if c not in cols]
    merged: dict[tuple, dict] = {}
    for part in parts:
        for row in part:
            k = tuple(row.get(c) for c in cols)
            have = merged.get(k)
            if have is None:
                merged[k] = dict(row)
                continue
            for f in SUM_FIELDS:
                if f == "cost_usd":
                    both_none = have[f] is None and row[f] is None
                    have[f] = None if both_none else (have[f] or 0.0) + (row[f] or 0.0)
                else:
                    have[f] += row[f]
            for f in ("client_name", "team"):
                if row.get(f) is not None:
                    have[f] = row[f]
    return [merged[k] for k in sorted(merged, key=lambda k: tuple("" if v is None else str(v) for v in k))]


def finish_rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        if row["unpriced_requests"] >= row["requests"]:
            row["cost_usd"] = None
        else:
            row["cost_usd"] = round(float(row["cost_usd"] or 0.0), 9)
    return rows
