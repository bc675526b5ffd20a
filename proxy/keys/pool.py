"""KeyPool: one per worker process; the store is the truth, this is the worker's fast in-memory view.

* State transitions seen on the request path (invalid key, circuit changes, cooldowns) are written at
  once, each in one tiny transaction that re-reads the row, so every worker obeys within
  ``refresh_interval_s`` and a ``kill -9`` never loses one. Operator actions, audit and snapshots
  live in ``proxy.keys.admin`` and tell the pool to reload what they changed.
* Per-request counters and health observations are batched in memory and flushed by a background
  thread every ``flush_interval_s`` (a greenlet under gevent's monkey patching); ``close()`` flushes.
* Other workers' commits are noticed through the store's change token (SQLite: ``PRAGMA
  data_version``, checked at most every ``refresh_interval_s`` on acquire), which triggers a reload.
* No store call that may wait for a lock runs while the pool lock is held, except the half-open claim,
  which waits at most ``CLAIM_WAIT_S``: a locked database slows the one caller, never the worker.

Secrets live only in ``self._secrets``: the configured ones (``sync``) and the runtime ones, decrypted
from ``runtime_keys`` on every reload (``proxy.keys.runtime`` adds and removes them; a runtime key added
through any worker is used by every worker at its next acquire). The store, snapshots, audit and errors
see ids.
Create the pool after gunicorn forks (one database connection per process).
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .. import errors
from ..observability import quiet
from ..store.base import KeyStore, KeyTx, StoreUnavailable, bounded_cooldowns
from ..store.runtime_keys import RuntimeKeyRow
from . import breaker, cooldown, scoring, selection, snapshot
from .diagnosis import Verdict, diagnose, judge, no_key_error
from .history import HistoryBuffer
from .ids import key_id, scrub
from .learn import Learned
from .pacing import Pacer
from .quota import Block
from .quota import soonest as quota_soonest
from .specs import Key, KeySettings, KeySpec
from .state import STATUS_INVALID, STATUS_OK, KeyState
from .vault import NoSecretKey, UndecryptableSecret, Vault

if TYPE_CHECKING:
    from ..store.history import HistoryTx

log = logging.getLogger("keyrelay.keys")

Tx = Callable[[KeyTx], None]
CLAIM_WAIT_S = 0.02  # the half-open claim runs under the pool lock: never wait long for it
MAX_DEFERRED = 10_000  # state transitions kept while the database is unavailable; more are dropped (counted)
VIEW_FLUSH_WAIT_S = 0.25  # describe()/get() flush first, but a locked database only makes them stale


@dataclass
class _Pending:
    """Counters and health observations of one key not yet flushed to the store."""

    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    latency_samples: int = 0
    last_used_at: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    obs: list[tuple[float, float]] = field(default_factory=list)

    def merge(self, newer: _Pending) -> _Pending:
        """This batch (failed to flush) followed by ``newer`` (recorded meanwhile)."""
        later_error = newer.last_error is not None
        return _Pending(
            self.requests + newer.requests, self.errors + newer.errors,
            self.latency_ms_total + newer.latency_ms_total, self.latency_samples + newer.latency_samples,
            max(self.last_used_at, newer.last_used_at),
            newer.last_error if later_error else self.last_error,
            newer.last_error_at if later_error else self.last_error_at,
            self.obs + newer.obs)


def _pick_first(pick: str, weighted: list[tuple[str, float]]) -> Iterator[str]:
    """The weighted pick, then (only if asked for: the pick is at a quota limit) the others by weight."""
    yield pick
    yield from (kid for kid, _ in sorted(weighted, key=lambda kw: -kw[1]) if kid != pick)


def check_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) \
            or not 0 < weight <= snapshot.MAX_WEIGHT:
        raise ValueError(f"weight must be a number in (0, {snapshot.MAX_WEIGHT:g}], got {weight!r}")
    return float(weight)


def log_key_state(key_id: str, label: str | None, provider: str, model: str | None, state: str,
                  reason: str) -> None:
    """One WARNING line per key state change an operator may act on (invalid, circuit, cooldown,
    disabled, learned limit): the key's id and label, never its secret."""
    log.warning(f"key {key_id}{f' ({label})' if label else ''} {state}"
                f"{f' for {model}' if model else ''}: {reason}",
                extra={"event": "key_state", "key_id": key_id, "label": label, "provider": provider,
                       "model": model, "state": state, "reason": reason})


class KeyPool:
    def __init__(self, store: KeyStore | str | Path, settings: KeySettings | None = None, *,
                 clock: Callable[[], float] = time.time, start_flusher: bool = True,
                 worker_offset: int | None = None, vault: Vault | None = None,
                 owns_store: bool = False) -> None:
        self.settings = settings or KeySettings()
        self.vault = vault or Vault(None)
        self.clock = clock
        self._owns_store = owns_store or isinstance(store, str | Path)
        if isinstance(store, str | Path):
            from ..store.backend import open_store

            store = open_store(str(store), lock_wait_s=self.settings.busy_timeout_ms / 1000)
        self.store: KeyStore = store
        self._lock = threading.RLock()
        self._secrets: dict[str, str | None] = {}  # configured + runtime (decrypted)
        self._config_secrets: dict[str, str | None] = {}
        self._config_scopes: dict[str, tuple[str, str | None]] = {}  # key id -> (provider, project)
        self._runtime: dict[str, RuntimeKeyRow] = {}
        self._decrypted: dict[str, tuple[str, str]] = {}  # key id → (token, secret): decrypt once
        self._undecryptable: set[str] = set()  # warned once each
        self._states: dict[str, KeyState] = {}
        self._by_provider: dict[str, list[str]] = {}
        self._cooldowns: dict[str, dict[str, float]] = {}
        self._pending: dict[str, _Pending] = {}
        self._retry: list[tuple[Tx, str]] = []
        self._writing: dict[str, int] = {}  # key id → transitions being written now (see _ahead)
        self.dropped_transitions = 0
        self._history = HistoryBuffer()  # per key and model rollups, written with the counters
        self._wrr: dict[str, dict[str, float]] = {}  # smooth-WRR running state per provider
        self._offset = os.getpid() if worker_offset is None else worker_offset
        self._data_version: int | None = None
        self._checked_at = -math.inf
        self._closed = False
        self.pacer = Pacer(self.store, clock, self.settings.reset_tz, self.settings.quota_limits,
                           enabled=self.settings.pacing)
        with self._lock:
            self._reload()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if start_flusher:
            self.start_flusher()

    def start_flusher(self) -> None:
        """Start the background flush (once; a pool built with ``start_flusher=False`` starts it here)."""
        if self._flusher is None and not self._closed:
            self._flusher = threading.Thread(target=self._flush_loop, name="keyrelay-key-flush", daemon=True)
            self._flusher.start()

    def __enter__(self) -> KeyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- configuration ------------------------------------------------------------------------

    def sync(self, specs: list[KeySpec]) -> None:
        """Register the configured keys (restoring retired ones with their history); retire the rest but
        the runtime keys. A restored key gets its config weight: an operator's old weight override is
        cleared, and the ``restore`` audit row says which it was."""
        secrets: dict[str, str | None] = {}
        rows = []
        scopes: dict[str, tuple[str, str | None]] = {}
        for spec in specs:
            kid = key_id(spec.provider, spec.secret)
            if kid in secrets:
                raise ValueError(f"key {kid} of provider {spec.provider!r} is configured twice")
            secrets[kid] = spec.secret
            scopes[kid] = (spec.provider, spec.project)
            rows.append((kid, spec.provider, spec.label, check_weight(spec.weight)))
        now = self.clock()
        with self.store.transaction() as tx:
            known = {k.id: k for k in tx.keys()}
            runtime = {r.key_id for r in tx.runtime_keys()}
            for kid, provider, label, weight in rows:
                tx.upsert_configured(kid, provider, label, weight, now)
                old = known.get(kid)
                if old is not None and old.retired:
                    tx.update(kid, weight_override=None)
                    tx.add_audit(now, "config", "restore", kid,
                                 {"retired": True, "weight_override": old.weight_override},
                                 {"retired": False, "weight_override": None, "weight": weight})
            for kid, st in known.items():
                if kid not in secrets and kid not in runtime and not st.retired:
                    tx.update(kid, retired=True, retired_at=now)
                    tx.add_audit(now, "config", "retire", kid, {"retired": False}, {"retired": True})
        with self._lock:
            self._config_secrets, self._config_scopes = secrets, scopes
            self._reload()

    # --- the request path ---------------------------------------------------------------------

    def acquire(self, provider: str, model: str, exclude: frozenset[str] = frozenset()) -> Key:
        """A usable key for (provider, model), or NoKeyAvailable (429 / 503) at once; never blocks long.

        Among the usable keys the weighted pick goes first, then the others by weight; each must pass the
        pacer (a known quota limit of its scope and model) before it is handed out."""
        with self._lock:
            self._maybe_refresh()
            now = self.clock()
            s = self.settings
            candidates: list[str] = []
            probes: list[str] = []
            for kid in self._by_provider.get(provider, ()):
                st = self._states[kid]
                if st.retired:
                    continue
                v = self._judge(st, model, now, exclude)
                if v.usable:
                    (probes if v.probe else candidates).append(kid)
            for kid in probes:  # a recovered circuit gets its single half-open probe first
                if self._claim_probe(kid, now):
                    return self._key(kid)
            if not candidates:
                raise no_key_error(provider, model, self._verdicts(provider, model, now, exclude))
            weighted = [(kid, selection.effective_weight(
                self._states[kid].weight,
                scoring.current(self._states[kid].health, self._states[kid].health_at, now,
                               s.health_half_life_s),
                s.health_floor)) for kid in candidates]
            pick = selection.smooth_wrr(selection.rotate(weighted, self._offset),
                                        self._wrr.setdefault(provider, {}))
        refused: dict[str, list[Block]] = {}
        for kid in _pick_first(pick, weighted):  # outside the pool lock: an admission may wait for the store
            found = self.pacer.admit(kid, model)
            if not found:
                with self._lock:
                    return self._key(kid)
            refused[kid] = found
        with self._lock:
            raise self._at_limit(provider, model, exclude, refused)

    def _at_limit(self, provider: str, model: str, exclude: frozenset[str],
                  refused: dict[str, list[Block]]) -> errors.NoKeyAvailable:
        """Every usable key is at a known limit: 429 with the soonest return, and per key what it is
        waiting for (limit, used, resets_at; no key id: keys are numbered in the provider's order)."""
        now = self.clock()
        verdicts, capacity = [], []
        for n, (kid, v) in enumerate(self._verdicts(provider, model, now, exclude), start=1):
            entry: dict[str, Any] = {"provider": provider, "key": n, "model": model}
            if kid in refused:
                back = quota_soonest(refused[kid])
                v = Verdict(False, "at_limit (" + ", ".join(
                    f"{b.kind} {b.used}/{b.limit}" for b in refused[kid]) + ")", max(0.0, back - now))
                capacity.append({**entry, "limits": {b.kind: {"limit": b.limit, "used": b.used,
                                                              "resets_at": round(b.resets_at, 3)}
                                                     for b in refused[kid]}, "resets_at": round(back, 3)})
            elif v.wait_s is not None:
                capacity.append({**entry, "cooling_down": True, "resets_at": round(now + v.wait_s, 3)})
            verdicts.append((kid, v))
        err = no_key_error(provider, model, verdicts)
        err.details = {"keys": capacity}
        return err

    def diagnose(self, provider: str, model: str) -> list[dict]:
        """Each key of ``provider``: can it serve ``model`` now, and if not why (for operators only)."""
        with self._lock:
            self._maybe_refresh(force=True)
            return diagnose(self._verdicts(provider, model, self.clock(), frozenset()))

    def _verdicts(self, provider: str, model: str, now: float,
                  exclude: frozenset[str]) -> list[tuple[str, Verdict]]:
        return [(kid, self._judge(self._states[kid], model, now, exclude))
                for kid in self._by_provider.get(provider, ())]

    def record(self, key_id: str, model: str, outcome: str, *, latency_ms: float | None = None,
               retry_after: float | None = None, daily: bool = False, error: str | None = None,
               status: int | None = None, tokens: int = 0, limits: Sequence[Learned] = ()) -> None:
        """Account one upstream attempt made with ``key_id``; transitions are persisted at once.

        ``tokens``: what an answer used (counted for the scope's token windows); ``limits``: what the
        answer revealed about the quota (learned for the key's scope). A quota failure cools down every
        key of the scope (a project's keys share its quota) for that model. ``status`` (the upstream's
        HTTP status) and ``tokens`` also feed the key's history."""
        if outcome not in errors.OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        s = self.settings
        now = self.clock()
        writes: list[tuple[Tx, str]] = []
        changes: list[tuple[str, str]] = []  # (new state, why) for the operator's log
        with self._lock:
            st = self._states.get(key_id)
            if st is None:
                log.warning("record() for unknown key %s ignored", key_id)
                return
            err = scrub(error, self._secrets.get(key_id), s.max_error_len)
            self._history.add(now, key_id, st.provider, model, outcome, latency_ms=latency_ms,
                              status=status, tokens=tokens)
            p = self._pending.setdefault(key_id, _Pending())
            p.requests += 1
            p.last_used_at = now
            if outcome in (errors.QUOTA, errors.AUTH, errors.TRANSIENT):
                p.errors += 1
                p.last_error, p.last_error_at = err or outcome, now
            if outcome == errors.OK and latency_ms is not None and latency_ms >= 0:
                p.latency_ms_total += latency_ms
                p.latency_samples += 1
            x = scoring.observation(outcome, latency_ms, s.slow_latency_ms)
            if x is not None:
                p.obs.append((now, x))
                st.health, st.health_at = scoring.observe(st.health, st.health_at, now, x,
                                                         half_life=s.health_half_life_s, alpha=s.health_alpha)
            nb = self._next_breaker(st.breaker, outcome, now)
            if nb != st.breaker:
                if nb.state != st.breaker.state:
                    changes.append((f"circuit {nb.state}", f"after {outcome}" + (f": {err}" if err else "")))
                if nb.state == breaker.OPEN and st.breaker.state != breaker.OPEN and nb.open_until:
                    self._history.period(key_id, "circuit_open", "", now, nb.open_until)
                st.breaker = nb
                writes.append((self._tx_breaker(key_id, outcome, now), key_id))
            if outcome == errors.QUOTA:
                until = cooldown.cooldown_until(now, retry_after=retry_after, daily=daily,
                                                default_s=s.default_cooldown_s, min_s=s.min_cooldown_s,
                                                tz=s.reset_tz(st.provider), max_s=s.max_cooldown_s)
                why = "daily quota spent" if daily else "rate-limited"
                why += f": cooling {until - now:.0f}s" + (f" ({err})" if err else "")
                for kid in self.pacer.members(key_id):
                    cds = self._cooldowns.setdefault(kid, {})
                    if until > cds.get(model, -math.inf):  # the store keeps the max: skip useless writes
                        if kid == key_id:
                            changes.append(("cooldown", why))
                        cds[model] = until
                        self._history.period(kid, "cooldown", model, now, until)
                        self._cooldowns[kid] = bounded_cooldowns(cds, now)
                        writes.append((self._tx_cooldown(kid, model, until, now), kid))
            elif outcome == errors.AUTH and st.status != STATUS_INVALID:
                st.status = STATUS_INVALID
                changes.append(("invalid", err or "the upstream refused the key"))
                writes.append((self._tx_invalid(key_id, err, now), key_id))
            for _, kid in writes:  # counted under the lock that changed the local view
                self._writing[kid] = self._writing.get(kid, 0) + 1
        for state, reason in changes:
            log_key_state(st.id, st.label, st.provider, model, state, reason)
        for fn, kid in writes:  # outside the pool lock: a locked database delays this caller only
            self._write(fn, kid)
        if limits:
            for m, item in self.pacer.learn(key_id, model, limits):
                log_key_state(st.id, st.label, st.provider, m, "learned limit",
                              f"{item.kind} {item.value} (from {item.source})")
        if tokens and outcome == errors.OK:
            self.pacer.charge_tokens(key_id, model, tokens)

    # --- views --------------------------------------------------------------------------------

    def describe(self) -> list[dict]:
        """Every active (not retired) key, for the admin listing."""
        self.flush(timeout=VIEW_FLUSH_WAIT_S)
        with self._lock:
            self._maybe_refresh(force=True)
            now = self.clock()
            active = [st for st in self._states.values() if not st.retired]
            with self.store.snapshot() as tx:
                return [{**self._public(st, now), "limits": self.pacer.view(tx, st.id, st.provider, now)}
                        for st in sorted(active, key=lambda k: (k.provider, k.id))]

    def get(self, key_id: str) -> dict | None:
        self.flush(timeout=VIEW_FLUSH_WAIT_S)
        with self._lock:
            self._maybe_refresh(force=True)
            st = self._states.get(key_id)
            if st is None:
                return None
            now = self.clock()
            with self.store.snapshot() as tx:
                return {**self._public(st, now), "limits": self.pacer.view(tx, st.id, st.provider, now)}

    def usable_count(self) -> int:
        """Active keys usable for some model right now (cooldowns are per model and not counted)."""
        with self._lock:
            self._maybe_refresh()
            now = self.clock()
            return sum(1 for st in self._states.values()
                       if not st.retired and self._judge(st, None, now, frozenset()).usable)

    def key(self, key_id: str) -> Key | None:
        """The active key with this id (its secret included, for a provider call), else None."""
        with self._lock:
            st = self._states.get(key_id)
            if st is None or st.retired or key_id not in self._secrets:
                return None
            return self._key(key_id)

    def knows(self, key_id: str) -> bool:
        with self._lock:
            return key_id in self._states

    def revalidation_candidates(self) -> list[str]:
        """Ids of active, configured keys marked invalid (after a fresh look at the store)."""
        with self._lock:
            self._maybe_refresh(force=True)
            return [st.id for st in self._states.values()
                    if st.status == STATUS_INVALID and not st.retired and st.id in self._secrets]

    # --- hooks for proxy.keys.admin -------------------------------------------------------------

    def reload(self) -> None:
        with self._lock:
            self._reload()

    def reload_key(self, key_id: str) -> None:
        with self._lock:
            self._load_key(key_id)

    def forget_observations(self, key_id: str) -> None:
        """Unflushed health observations no longer count (the key's health was reset)."""
        with self._lock:
            p = self._pending.get(key_id)
            if p:
                p.obs.clear()

    def discard_pending(self, key_ids: list[str]) -> None:
        """Unflushed counters of these keys are dropped (their state was replaced by an import)."""
        with self._lock:
            for kid in key_ids:
                self._pending.pop(kid, None)

    # --- persistence --------------------------------------------------------------------------

    def write(self, fn: Tx, kid: str, timeout: float | None = None) -> bool:
        """Run one state transition in its own transaction, then refresh that key's view.

        If the database stays locked past the deadline the transition is kept (the local view
        already obeys it) and retried by the next flush, after any transition deferred before it.
        """
        with self._lock:
            self._writing[kid] = self._writing.get(kid, 0) + 1
        return self._write(fn, kid, timeout)

    def _write(self, fn: Tx, kid: str, timeout: float | None = None) -> bool:
        """``write`` for a transition already counted in ``_writing``."""
        with self._lock:
            if self._retry:
                self._defer(fn, kid)
                self._written(kid, False)
                return False
        try:
            with self.store.transaction(timeout) as tx:
                fn(tx)
        except StoreUnavailable as exc:
            quiet.warn(log, "key_state_write_deferred", "key state write for %s deferred: %s", kid, exc)
            with self._lock:
                self._defer(fn, kid)
                self._written(kid, False)
            return False
        with self._lock:
            self._written(kid, True)
        return True

    def _written(self, kid: str, stored: bool) -> None:
        """One transition of ``kid`` is no longer being written (pool lock held): the store has it
        (``stored``) or it waits in ``_retry``. Once none is in flight or deferred, the key's view is
        the store's again."""
        n = self._writing.pop(kid, 0) - 1
        if n > 0:
            self._writing[kid] = n
        if stored and not self._ahead(kid):
            self._load_key(kid)

    def _ahead(self, kid: str) -> bool:
        """A transition of ``kid`` is being written or deferred: the local view is ahead of the store's,
        and a reload must not undo it."""
        return kid in self._writing or any(k == kid for _, k in self._retry)

    def _defer(self, fn: Tx, kid: str) -> None:
        """Keep a transition for the next flush (pool lock held); past ``MAX_DEFERRED`` it is dropped:
        the local view still obeys it, the database and other workers will not (counted, logged)."""
        if len(self._retry) < MAX_DEFERRED:
            self._retry.append((fn, kid))
            return
        self.dropped_transitions += 1
        from proxy.observability import metrics

        metrics.STORE_DROPPED.labels("key_state").inc()
        if self.dropped_transitions % 1000 == 1:
            log.error("key state writes dropped: %d deferred already (database unavailable)", MAX_DEFERRED,
                      extra={"event": "key_state_dropped", "dropped_total": self.dropped_transitions})

    def flush(self, timeout: float | None = None) -> bool:
        """Write batched counters and health observations, and retry deferred transitions.

        Waits for the store at most ``timeout`` (default: the store's lock wait) without holding the
        pool lock; on failure everything is kept for the next flush. True when all was written."""
        with self._lock:
            if self._closed:
                return True
            retry, self._retry = self._retry, []
            for _, kid in retry:
                self._writing[kid] = self._writing.get(kid, 0) + 1
            pending, self._pending = self._pending, {}
            history = self._history.take()
        for i, (fn, kid) in enumerate(retry):
            try:
                with self.store.transaction(timeout) as tx:
                    fn(tx)
            except StoreUnavailable as exc:
                quiet.warn(log, "key_state_write_deferred", "deferred key state writes wait on: %s", exc)
                with self._lock:
                    self._retry[:0] = retry[i:]
                    for _, k in retry[i:]:
                        self._written(k, False)
                    self._merge_back(pending)
                    self._history.put_back(*history)
                return False
            with self._lock:
                self._written(kid, True)
        self.pacer.flush(timeout)
        if not pending and not history[0] and not history[1]:
            return True
        try:
            with self.store.transaction(timeout) as tx:
                self._flush_counters(tx, pending)
                cast("HistoryTx", tx).add_history(*history)
        except StoreUnavailable as exc:
            quiet.warn(log, "key_counters_deferred", "key counters flush deferred: %s", exc)
            with self._lock:
                self._merge_back(pending)
                self._history.put_back(*history)
            return False
        with self._lock:
            for kid in pending:
                self._load_key(kid)
        return True

    def _flush_counters(self, tx: KeyTx, pending: dict[str, _Pending]) -> None:
        s = self.settings
        for kid, p in pending.items():
            row = tx.key(kid)
            if row is None:
                continue
            h, at = row.health, row.health_at
            for t, x in p.obs:
                h, at = scoring.observe(h, at, t, x, half_life=s.health_half_life_s, alpha=s.health_alpha)
            fields: dict[str, Any] = {"health": h, "health_at": at,
                                      "last_used_at": max(row.last_used_at or 0, p.last_used_at)}
            newer = p.last_error is not None and p.last_error_at is not None and (
                row.last_error_at is None or p.last_error_at >= row.last_error_at)
            if newer:
                fields.update(last_error=p.last_error, last_error_at=p.last_error_at)
            tx.add_counters(kid, p.requests, p.errors, p.latency_ms_total, p.latency_samples)
            tx.update(kid, **fields)
        tx.purge_cooldowns(self.clock() - 3600)

    def _merge_back(self, pending: dict[str, _Pending]) -> None:
        """Put an unflushed batch back in front of what was recorded meanwhile (pool lock held)."""
        for kid, p in pending.items():
            newer = self._pending.get(kid)
            self._pending[kid] = p if newer is None else p.merge(newer)

    def close(self) -> None:
        """Stop the flusher, flush, close the store if this pool opened it. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self.flush()
        with self._lock:
            self._closed = True
            if self._owns_store:
                self.store.close()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.settings.flush_interval_s):
            try:
                self.flush()
            except Exception:  # keep flushing; the next round retries
                log.exception("key counters flush failed")

    def _maybe_refresh(self, force: bool = False) -> None:
        """Reload when the change token turned (looked at every ``refresh_interval_s``); ``force`` (the
        views, not the request path): reload now, as PostgreSQL's token turns only when another
        process's notification has arrived, a moment after its commit."""
        mono = time.monotonic()
        if not force and mono - self._checked_at < self.settings.refresh_interval_s:
            return
        self._checked_at = mono
        if force or self.store.change_token() != self._data_version:
            try:
                self._reload()
            except StoreUnavailable as exc:  # serve from the last view; the next acquire retries
                quiet.warn(log, "store_degraded", "key view not refreshed, serving the last one: %s", exc)

    def _reload(self) -> None:
        """Replace the in-memory view with the store's (small tables: all keys, live cooldowns)."""
        now = self.clock()
        version = self.store.change_token()
        with self.store.snapshot() as tx:
            rows, cds, runtime = tx.keys(), tx.all_cooldowns(now), tx.runtime_keys()
            learned = tx.quota_limits()
        self.pacer.load(learned)
        # keys with a transition being written or deferred keep their local view (see _ahead)
        behind = set(self._writing).union(kid for _, kid in self._retry)
        ahead = {kid: (self._states[kid], self._cooldowns.get(kid, {}))
                 for kid in behind if kid in self._states}
        self._states = {st.id: st for st in rows}
        self._load_runtime(runtime)
        by_provider: dict[str, list[str]] = {}
        for kid in sorted(self._states):
            by_provider.setdefault(self._states[kid].provider, []).append(kid)
        self._by_provider = by_provider
        self._cooldowns = cds
        for kid, (st, local_cds) in ahead.items():
            if kid in self._states:
                self._states[kid] = st
                merged = dict(cds.get(kid, {}))
                for model, until in local_cds.items():
                    merged[model] = max(until, merged.get(model, until))
                self._cooldowns[kid] = merged
        for kid in self._pending:
            if kid not in ahead:
                self._reapply(kid)
        self._data_version = version

    def _load_runtime(self, rows: list[RuntimeKeyRow]) -> None:
        """The runtime secrets, decrypted (each token once); one that cannot be opened is left out
        (the key cannot serve: 'no secret in this worker') and logged once, by id."""
        secrets = dict(self._config_secrets)
        self._runtime = {r.key_id: r for r in rows}
        for r in rows:
            cached = self._decrypted.get(r.key_id)
            if cached is None or cached[0] != r.secret_enc:
                try:
                    cached = (r.secret_enc, self.vault.decrypt(r.secret_enc))
                except (NoSecretKey, UndecryptableSecret) as exc:
                    if r.key_id not in self._undecryptable:
                        self._undecryptable.add(r.key_id)
                        log.warning("runtime key %s cannot be used: %s", r.key_id, exc,
                                    extra={"event": "runtime_key_undecryptable", "key_id": r.key_id})
                    continue
                self._decrypted[r.key_id] = cached
                self._undecryptable.discard(r.key_id)
            secrets.setdefault(r.key_id, cached[1])
        for kid in set(self._decrypted) - set(self._runtime):
            del self._decrypted[kid]
        self._secrets = secrets
        # a runtime key's project counts with the configured keys of that project (quota pacing)
        self.pacer.set_scopes({**{r.key_id: (r.provider, r.project) for r in rows}, **self._config_scopes})

    def source(self, key_id: str) -> str | None:
        """'config', 'runtime' (added through the admin API or CLI), or None (retired / unknown)."""
        with self._lock:
            if key_id in self._config_secrets:
                return "config"
            return "runtime" if key_id in self._runtime else None

    def _load_key(self, kid: str) -> None:
        with self.store.snapshot() as tx:
            st = tx.key(kid)
            cds = tx.cooldowns(kid, self.clock()) if st is not None else {}
        if st is None:
            return
        if kid not in self._states:
            self._by_provider.setdefault(st.provider, []).append(kid)
            self._by_provider[st.provider].sort()
        self._states[kid] = st
        self._cooldowns[kid] = cds
        self._reapply(kid)

    def _reapply(self, kid: str) -> None:
        """Unflushed health observations stay visible after a reload."""
        p, st = self._pending.get(kid), self._states.get(kid)
        if p is None or st is None:
            return
        for t, x in p.obs:
            st.health, st.health_at = scoring.observe(st.health, st.health_at, t, x,
                                                     half_life=self.settings.health_half_life_s,
                                                     alpha=self.settings.health_alpha)

    # --- transitions (each runs inside one transaction and re-reads the row first) -------------

    def _next_breaker(self, b: breaker.Breaker, outcome: str, now: float) -> breaker.Breaker:
        s = self.settings
        return breaker.on_outcome(b, outcome, now, threshold=s.breaker_failures, window=s.breaker_window_s,
                                  open_s=s.breaker_open_s)

    def _tx_breaker(self, kid: str, outcome: str, now: float) -> Tx:
        def fn(tx: KeyTx) -> None:
            row = tx.key(kid)
            if row is None:
                return
            nb = self._next_breaker(row.breaker, outcome, now)
            if nb != row.breaker:
                tx.update(kid, breaker=nb)
        return fn

    @staticmethod
    def _tx_cooldown(kid: str, model: str, until: float, now: float) -> Tx:
        def fn(tx: KeyTx) -> None:
            tx.raise_cooldown(kid, model, until, now)
        return fn

    @staticmethod
    def _tx_invalid(kid: str, reason: str | None, now: float) -> Tx:
        def fn(tx: KeyTx) -> None:
            if tx.mark_invalid(kid, reason, now):
                tx.add_audit(now, "system", "invalid", kid, {"status": STATUS_OK},
                             {"status": STATUS_INVALID, "reason": reason})
        return fn

    def _claim_probe(self, kid: str, now: float) -> bool:
        """Claim the single half-open probe across all workers (one conditional UPDATE)."""
        try:
            with self.store.transaction(CLAIM_WAIT_S) as tx:
                won = tx.claim_half_open(kid, now, now - self.settings.probe_timeout_s)
        except StoreUnavailable as exc:
            log.warning("half-open claim for %s failed: %s", kid, exc)
            return False
        self._load_key(kid)
        return won

    # --- view helpers ---------------------------------------------------------------------------

    def _judge(self, st: KeyState, model: str | None, now: float, exclude: frozenset[str]) -> Verdict:
        until = self._cooldowns.get(st.id, {}).get(model) if model is not None else None
        return judge(st, until, now, probe_timeout=self.settings.probe_timeout_s, excluded=st.id in exclude,
                     has_secret=st.id in self._secrets)

    def _key(self, kid: str) -> Key:
        st = self._states[kid]
        return Key(kid, st.provider, self._secrets[kid], st.label, st.weight)

    def _public(self, st: KeyState, now: float) -> dict:
        s = self.settings
        circuit, left = breaker.view(st.breaker, now, s.probe_timeout_s)
        cds = {m: round(u - now, 1) for m, u in sorted(self._cooldowns.get(st.id, {}).items()) if u > now}
        return {
            "id": st.id, "provider": st.provider, "label": st.label, "retired": st.retired,
            "enabled": st.enabled, "disabled_reason": st.disabled_reason,
            "status": st.status, "status_reason": st.status_reason, "status_at": st.status_at,
            "weight": st.weight,
            "health": round(scoring.current(st.health, st.health_at, now, s.health_half_life_s), 3),
            "circuit": circuit, "circuit_seconds_left": None if left is None else round(left, 1),
            "cooldowns": cds,
            "requests": st.requests, "errors": st.errors,
            "latency_ms_avg": (round(st.latency_ms_total / st.latency_samples, 1)
                               if st.latency_samples else None),
            "last_error": st.last_error, "last_error_at": st.last_error_at, "last_used_at": st.last_used_at,
            "cooldowns_until": {m: u for m, u in sorted(self._cooldowns.get(st.id, {}).items()) if u > now},
            "circuit_until": None if left is None else now + left,
            "usable": self._judge(st, None, now, frozenset()).usable,
            **self._origin(st.id),
        }

    def _origin(self, kid: str) -> dict:
        """Where the key comes from; a runtime key's hint and project (config ones: from the config)."""
        if kid in self._config_secrets:
            return {"source": "config"}
        r = self._runtime.get(kid)
        if r is None:
            return {"source": None}
        return {"source": "runtime", "hint": r.hint, "project": r.project}
