"""Quota-aware pacing: the limits each (scope, model) has — configured, or learned from the upstream's
answers — and the admission that keeps the next request under them, exact across workers.

The pool asks ``admit`` for the key it picked. With no limit known nothing is decided: the request is
counted in memory and written by the pool's batched flush (``flush``), so the first 429 finds the window
as the upstream saw it. With limits known, the worker *leases* a slice of the scope's capacity in one
short transaction that reads the sliding minute and the day counters and reserves the slice only if it
fits under every limit; requests are then admitted from the slice in memory. Every reservation is in the
store, so all workers together never pass a limit. A slice is 1 while traffic is slow or capacity is
short (exact, one transaction a request), doubles while it is used up within ``LEASE_S``, is what the
last one served when that one expired in use (at most ``MAX_SLICE`` and a quarter of what is left),
and lives ``LEASE_S``: the minute window (``MINUTE_S``, 61 s) still covers a request admitted from it a
second after it was reserved. What a slice did not use is given back to the day counter by the next
flush (or the next slice); in the minute it expires by itself.
Answers' tokens are counted in the same batch as the unlimited requests.
``learn`` stores what a 429 or an answer's headers revealed, and how much of each window the upstream
said is spent. The arithmetic is in ``quota``, the parsing in ``learn``, the SQL in
``proxy.store.quota``.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..observability import quiet
from ..store.base import KeyStore, KeyTx, StoreUnavailable
from . import quota
from .learn import HEADERS, Learned
from .quota import Block, Limit, Usage

log = logging.getLogger("keyrelay.keys")

ADMIT_WAIT_S = 0.25  # a locked database delays one admission at most this long, then lets it through
DAYS_KEPT = 3  # day counters older than this many days are purged
LEASE_S = 1.0  # a slice of capacity is used within this long of its reservation, or dropped
MAX_SLICE = 256


@dataclass
class _Lease:
    """A slice of one (scope, model)'s capacity reserved in the store by this worker."""

    granted: int
    used: int
    at: float
    day: float
    size: int  # the slice size asked for (the next one doubles it when this one runs out in time)


class Pacer:
    def __init__(self, store: KeyStore, clock: Callable[[], float], tz_of: Callable[[str], str],
                 configured: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None, *,
                 enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled  # off: no admission check, nothing counted or learned
        self.clock = clock
        self.tz_of = tz_of  # provider → daily reset time zone
        self._configured = {p: {m: dict(w) for m, w in lims.items()}
                            for p, lims in (configured or {}).items()}
        self._scopes: dict[str, tuple[str, str]] = {}  # key id → (provider, scope)
        self._learned: dict[tuple[str, str], dict[str, Limit]] = {}  # (scope, model) → kind → limit
        self._merged: dict[tuple[str, str, str], dict[str, Limit]] = {}  # (provider, scope, model) → limits
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], _Lease] = {}  # (scope, model) → this worker's slice
        self._days: dict[str, tuple[float, float]] = {}  # time zone → the current day window (start, end)
        # batched counts: (scope, model, day, second) → [requests, tokens]
        self._pending: dict[tuple[str, str, float, float], list[int]] = {}

    # --- configuration and the view of the store ------------------------------------------------

    def set_scopes(self, scopes: Mapping[str, tuple[str, str | None]]) -> None:
        """``{key id: (provider, project or None)}`` for the configured keys."""
        self._scopes = {kid: (p, quota.scope_of(p, kid, project)) for kid, (p, project) in scopes.items()}

    def load(self, rows: Sequence[dict]) -> None:
        """Replace the learned limits with the store's rows (``QuotaTx.quota_limits``)."""
        learned: dict[tuple[str, str], dict[str, Limit]] = {}
        for r in rows:
            learned.setdefault((r["scope"], r["model"]), {})[r["kind"]] = Limit(r["value"], r["source"],
                                                                                r["learned_at"])
        self._replace_learned(learned)

    def _replace_learned(self, learned: dict[tuple[str, str], dict[str, Limit]]) -> None:
        """New learned limits; slices leased under limits that changed are dropped."""
        changed = {k for k in learned.keys() | self._learned.keys() if learned.get(k) != self._learned.get(k)}
        self._learned = learned
        if changed:
            self._merged = {}
            with self._lock:
                for k in changed:
                    self._leases.pop(k, None)

    def _where(self, kid: str) -> tuple[str, str]:
        """(provider, scope) of a key; a key not in this worker's config is its own scope."""
        return self._scopes.get(kid) or ("", quota.scope_of("", kid, None))

    def scope(self, kid: str) -> str:
        return self._where(kid)[1]

    def members(self, kid: str) -> list[str]:
        """The keys that share ``kid``'s quota (itself included)."""
        s = self.scope(kid)
        return [k for k, (_, sc) in self._scopes.items() if sc == s] or [kid]

    def limits(self, kid: str, model: str) -> dict[str, Limit]:
        """The limits of ``kid``'s scope for ``model``, per window the strongest source."""
        provider, scope = self._where(kid)
        found = self._merged.get((provider, scope, model))
        if found is None:
            cfg = quota.configured_for(self._configured.get(provider, {}), model)
            found = quota.merge(cfg, self._learned.get((scope, model)) or {})
            if len(self._merged) < 10_000:  # models come from config or the pass-through grammar
                self._merged[(provider, scope, model)] = found
        return found

    def _day(self, provider: str, now: float) -> tuple[str, float]:
        """(time zone, start of the day window holding ``now``), computed once a day per zone."""
        tz = self.tz_of(provider)
        window = self._days.get(tz)
        if window is None or not window[0] <= now < window[1]:
            start = quota.day_start(now, tz)
            window = self._days[tz] = (start, quota.resets_at("rpd", Usage(), now, tz))
        return tz, window[0]

    # --- the request path -----------------------------------------------------------------------

    def admit(self, kid: str, model: str) -> list[Block]:
        """Admit one request for ``model`` on ``kid``'s scope if it fits under every known limit; the
        windows that refuse it otherwise (empty: admitted)."""
        if not self.enabled:
            return []
        lims = self.limits(kid, model)
        provider, scope = self._where(kid)
        now = self.clock()
        if not lims:  # nothing to decide: count it in the next batch (at the end of its second)
            self._count(scope, model, self._day(provider, now)[1], now, 1, 0)
            return []
        key = (scope, model)
        with self._lock:
            lease = self._leases.get(key)
            fresh = lease is not None and lease.at <= now <= lease.at + LEASE_S
            if lease is not None and fresh and lease.used < lease.granted:
                lease.used += 1
                return []
            size = 1
            if lease is not None:
                del self._leases[key]
                if fresh:  # used up within its lifetime: twice as much next time
                    size = min(MAX_SLICE, lease.size * 2)
                elif lease.at <= now <= lease.at + 2 * LEASE_S:  # expired while in use: what it served
                    size = max(1, lease.used)
        tz, day = self._day(provider, now)
        try:
            with self.store.transaction(ADMIT_WAIT_S) as tx:
                if lease is not None and lease.granted > lease.used:  # give back what was not used
                    _refund(tx, scope, model, lease, lease.granted - lease.used)
                usage = Usage(*tx.quota_usage(scope, model, now - quota.MINUTE_S, day))
                found = quota.blocks(lims, usage, now, tz)
                if found:
                    return found
                room = min((lims[k].value - usage.used(k) for k in quota.REQUESTS if k in lims), default=size)
                grant = max(1, min(size, room // 4))
                tx.add_quota_use(scope, model, now, day, grant, 0)
        except StoreUnavailable as exc:  # serving beats refusing: the upstream's own 429 still protects
            log.warning("quota admission for %s not counted: %s", kid, exc)
            return []
        with self._lock:
            self._leases[key] = _Lease(grant, 1, now, day, size)
        return []

    def charge_tokens(self, kid: str, model: str, tokens: int) -> None:
        """Count an answer's tokens (in the next batch; token windows are checked, never reserved)."""
        if not self.enabled or tokens <= 0:
            return
        provider, scope = self._where(kid)
        now = self.clock()
        self._count(scope, model, self._day(provider, now)[1], now, 0, tokens)

    def _count(self, scope: str, model: str, day: float, now: float, requests: int, tokens: int) -> None:
        k = (scope, model, day, float(math.ceil(now)))
        with self._lock:
            entry = self._pending.setdefault(k, [0, 0])
            entry[0] += requests
            entry[1] += tokens

    def flush(self, timeout: float | None = None) -> None:
        """Write the batched counts, give the day back what expired slices did not use, purge old days."""
        now = self.clock()
        with self._lock:
            pending, self._pending = self._pending, {}
            unused = []
            for (scope, model), lease in self._leases.items():
                if now > lease.at + LEASE_S and lease.granted > lease.used:
                    unused.append((scope, model, replace(lease), lease.granted - lease.used))
                    lease.granted = lease.used  # kept: its size still sizes the next slice
        try:
            with self.store.transaction(timeout) as tx:
                for (scope, model, day, at), (n, tokens) in pending.items():
                    tx.add_quota_use(scope, model, at, day, n, tokens)
                for scope, model, lease, n in unused:
                    _refund(tx, scope, model, lease, n)
                tx.purge_quota(now - DAYS_KEPT * 86400)
        except StoreUnavailable as exc:
            quiet.warn(log, "quota_counts_deferred", "quota counts flush deferred: %s", exc)
            with self._lock:
                for k, (n, tokens) in pending.items():
                    entry = self._pending.setdefault(k, [0, 0])
                    entry[0] += n
                    entry[1] += tokens

    def learn(self, kid: str, model: str, found: Sequence[Learned]) -> list[tuple[str, Learned]]:
        """Store what an answer revealed (a different value replaces the old one) and how much of each
        window it said is spent; returns the (model, limit) pairs whose value is new."""
        if not self.enabled:
            return []
        provider, scope = self._where(kid)
        todo, new = [], []
        for item in found:
            for m in dict.fromkeys([item.model or model, model]):  # the model it names, and the request's
                known = self._learned.get((scope, m), {}).get(item.kind)
                if item.source == HEADERS and known and known.value == item.value and known.source == HEADERS:
                    continue  # the same headers on every answer: nothing new, no write
                todo.append((m, item))
                if known is None or known.value != item.value:
                    new.append((m, item))
        if not todo:
            return []
        self.flush()  # the batched counts first: the upstream's "used" is compared with ours
        now = self.clock()
        tz = self.tz_of(provider)
        try:
            with self.store.transaction() as tx:
                for m, item in todo:
                    tx.put_quota_limit(scope, m, item.kind, item.value, item.source, now)
                    if item.used:
                        _seed(tx, scope, m, item, now, quota.day_start(now, tz))
                rows = [r for r in tx.quota_limits() if r["scope"] == scope]
        except StoreUnavailable as exc:
            log.warning("learned quota for %s not stored: %s", kid, exc)
            return []
        learned = {k: v for k, v in self._learned.items() if k[0] != scope}
        for r in rows:
            learned.setdefault((scope, r["model"]), {})[r["kind"]] = Limit(r["value"], r["source"],
                                                                           r["learned_at"])
        self._replace_learned(learned)
        return new

    # --- views ----------------------------------------------------------------------------------

    def view(self, tx: KeyTx, kid: str, provider: str, now: float) -> dict[str, dict]:
        """``{model: {"rpm": {"limit", "used", "resets_at", "source", "learned_at"}, ...}}`` for a key."""
        scope = self.scope(kid)
        tz = self.tz_of(provider)
        day = quota.day_start(now, tz)
        models = {m for (s, m) in self._learned if s == scope}
        models |= {m for m in self._configured.get(provider, {}) if not any(c in m for c in "*?[")}
        models |= set(tx.quota_models(scope, day))
        out = {}
        for m in sorted(models):
            lims = self.limits(kid, m)
            if lims:
                usage = Usage(*tx.quota_usage(scope, m, now - quota.MINUTE_S, day, forget=False))
                out[m] = quota.window_view(lims, usage, now, tz)
        return out


def _seed(tx: KeyTx, scope: str, model: str, item: Learned, now: float, day: float) -> None:
    """Raise the window's usage to what the upstream said is spent (never lowers it)."""
    used = item.used or 0
    tokens = item.kind in quota.TOKENS
    if item.kind in quota.PER_MINUTE:
        u = Usage(*tx.quota_usage(scope, model, now - quota.MINUTE_S, day))
        gap = used - (u.minute_tokens if tokens else u.minute_requests)
        if gap > 0:
            tx.add_quota_use(scope, model, now, None, 0 if tokens else gap, gap if tokens else 0)
    else:
        tx.raise_quota_day(scope, model, day, 0 if tokens else used, used if tokens else 0)


def _refund(tx: Any, scope: str, model: str, lease: _Lease, n: int) -> None:
    """Give back ``n`` requests of a slice that were never sent: to its day, and to the sliding minute as a
    negative entry at the slice's own time (it leaves the window together with the grant)."""
    tx.refund_quota_day(scope, model, lease.day, n)
    tx.add_quota_use(scope, model, lease.at, None, -n, 0)
