"""Quota-aware pacing: the limits each (scope, model) has — configured, or learned from the upstream's
answers — and the admission that keeps the next request under them, exact across workers.

The pool asks ``admit`` for the key it picked: one short transaction reads the sliding minute and the
day counters of the key's scope and model and charges the request only if it fits under the known
limits. With no limit known nothing is decided, so the request is only counted, in memory, and written
by the pool's batched flush (``flush``): the first 429 then finds the window as the upstream saw it.
``learn`` stores what a 429 or an answer's headers revealed, and how much of each window the upstream
said is spent. The arithmetic is in ``quota``, the parsing in ``learn``, the SQL in
``proxy.store.quota``.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence

from ..store.base import KeyStore, KeyTx, StoreUnavailable
from . import quota
from .learn import HEADERS, Learned
from .quota import Block, Limit, Usage

log = logging.getLogger("keyrelay.keys")

ADMIT_WAIT_S = 0.25  # a locked database delays one admission at most this long, then lets it through
DAYS_KEPT = 3  # day counters older than this many days are purged


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
        self._cfg_cache: dict[tuple[str, str], dict[str, int]] = {}
        self._scopes: dict[str, tuple[str, str]] = {}  # key id → (provider, scope)
        self._learned: dict[tuple[str, str], dict[str, Limit]] = {}  # (scope, model) → kind → limit
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, float, float], int] = {}  # (scope, model, day, second) → n

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
        self._learned = learned

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
        provider, scope = self._where(kid)
        cfg = self._cfg_cache.get((provider, model))
        if cfg is None:
            cfg = self._cfg_cache[(provider, model)] = quota.configured_for(
                self._configured.get(provider, {}), model)
        learned = self._learned.get((scope, model))
        if not cfg and not learned:
            return {}
        return quota.merge(cfg, learned or {})

    # --- the request path -----------------------------------------------------------------------

    def admit(self, kid: str, model: str) -> list[Block]:
        """Charge one request to ``kid``'s scope for ``model`` if it fits under every known limit; the
        windows that refuse it otherwise (empty: admitted)."""
        if not self.enabled:
            return []
        lims = self.limits(kid, model)
        provider, scope = self._where(kid)
        tz = self.tz_of(provider)
        now = self.clock()
        day = quota.day_start(now, tz)
        if not lims:  # nothing to decide: count it in the next batch (at the end of its second)
            k = (scope, model, day, float(math.ceil(now)))
            with self._lock:
                self._pending[k] = self._pending.get(k, 0) + 1
            return []
        try:
            with self.store.transaction(ADMIT_WAIT_S) as tx:
                usage = Usage(*tx.quota_usage(scope, model, now - quota.MINUTE_S, day))
                found = quota.blocks(lims, usage, now, tz)
                if not found:
                    tx.add_quota_use(scope, model, now, day, 1, 0)
        except StoreUnavailable as exc:  # serving beats refusing: the upstream's own 429 still protects
            log.warning("quota admission for %s not counted: %s", kid, exc)
            return []
        return found

    def flush(self, timeout: float | None = None) -> None:
        """Write the batched counts (requests of scopes with no known limit) and purge old days."""
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            with self.store.transaction(timeout) as tx:
                for (scope, model, day, at), n in pending.items():
                    tx.add_quota_use(scope, model, at, day, n, 0)
                tx.purge_quota(self.clock() - DAYS_KEPT * 86400)
        except StoreUnavailable as exc:
            log.warning("quota counts flush deferred: %s", exc)
            with self._lock:
                for k, n in pending.items():
                    self._pending[k] = self._pending.get(k, 0) + n

    def charge_tokens(self, kid: str, model: str, tokens: int) -> None:
        """Count an answer's tokens where a token window is known."""
        if not self.enabled or tokens <= 0 or not any(k in quota.TOKENS for k in self.limits(kid, model)):
            return
        provider, scope = self._where(kid)
        now = self.clock()
        try:
            with self.store.transaction(ADMIT_WAIT_S) as tx:
                tx.add_quota_use(scope, model, now, quota.day_start(now, self.tz_of(provider)), 0, tokens)
        except StoreUnavailable as exc:
            log.warning("quota tokens for %s not counted: %s", kid, exc)

    def learn(self, kid: str, model: str, found: Sequence[Learned]) -> None:
        """Store what an answer revealed (a different value replaces the old one) and how much of each
        window it said is spent."""
        if not self.enabled:
            return
        provider, scope = self._where(kid)
        todo = []
        for item in found:
            for m in dict.fromkeys([item.model or model, model]):  # the model it names, and the request's
                known = self._learned.get((scope, m), {}).get(item.kind)
                if item.source == HEADERS and known and known.value == item.value and known.source == HEADERS:
                    continue  # the same headers on every answer: nothing new, no write
                todo.append((m, item))
        if not todo:
            return
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
            return
        learned = {k: v for k, v in self._learned.items() if k[0] != scope}
        for r in rows:
            learned.setdefault((scope, r["model"]), {})[r["kind"]] = Limit(r["value"], r["source"],
                                                                           r["learned_at"])
        self._learned = learned

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
