"""KeyPool: one per worker process; SQLite is the truth, this is the worker's fast in-memory view.

* State transitions (disable/enable, invalid, circuit changes, cooldowns, weight, reset, import) are
  written at once, each in one tiny ``BEGIN IMMEDIATE`` transaction that re-reads the row, so every
  worker obeys within ``refresh_interval_s`` and a ``kill -9`` never loses one.
* Per-request counters and health observations are batched in memory and flushed by a background
  thread every ``flush_interval_s`` (a greenlet under gevent's monkey patching); ``close()`` flushes.
* Other workers' commits are noticed through ``PRAGMA data_version`` (checked at most every
  ``refresh_interval_s`` on acquire), which triggers a reload of the small ``keys`` table.

Secrets live only in ``self._secrets`` (from config); SQLite, snapshots, audit and errors see ids.
Create the pool after gunicorn forks (one SQLite connection per process).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field
from typing import Any

from .. import errors
from ..store.db import connect, migrate
from . import breaker, cooldown, health, selection, snapshot
from .diagnosis import Verdict, judge, no_key_error
from .ids import key_id, scrub
from .specs import Key, KeySettings, KeySpec
from .state import SELECT_KEYS, STATUS_INVALID, STATUS_OK, KeyState, breaker_from_row, from_row

log = logging.getLogger("keyrelay.keys")

Tx = Callable[[sqlite3.Connection], None]


@dataclass
class _Pending:
    """Counters and health observations of one key not yet flushed to SQLite."""

    requests: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    latency_samples: int = 0
    last_used_at: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    obs: list[tuple[float, float]] = field(default_factory=list)


def _check_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) \
            or not 0 < weight <= snapshot.MAX_WEIGHT:
        raise ValueError(f"weight must be a number in (0, {snapshot.MAX_WEIGHT:g}], got {weight!r}")
    return float(weight)


class KeyPool:
    def __init__(self, db_path: str, settings: KeySettings | None = None, *,
                 clock: Callable[[], float] = time.time, start_flusher: bool = True,
                 worker_offset: int | None = None) -> None:
        self.settings = settings or KeySettings()
        self._clock = clock
        self._conn = connect(db_path, busy_timeout_ms=self.settings.busy_timeout_ms)
        migrate(self._conn)
        self._lock = threading.RLock()
        self._secrets: dict[str, str | None] = {}
        self._states: dict[str, KeyState] = {}
        self._by_provider: dict[str, list[str]] = {}
        self._cooldowns: dict[str, dict[str, float]] = {}
        self._pending: dict[str, _Pending] = {}
        self._retry: list[tuple[Tx, str]] = []
        self._wrr: dict[str, dict[str, float]] = {}  # smooth-WRR running state per provider
        self._offset = os.getpid() if worker_offset is None else worker_offset
        self._data_version: int | None = None
        self._checked_at = -math.inf
        self._closed = False
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
        """Register the configured keys (restoring retired ones with their history); retire the rest."""
        secrets: dict[str, str | None] = {}
        rows = []
        for spec in specs:
            kid = key_id(spec.provider, spec.secret)
            if kid in secrets:
                raise ValueError(f"key {kid} of provider {spec.provider!r} is configured twice")
            secrets[kid] = spec.secret
            rows.append((kid, spec.provider, spec.label, _check_weight(spec.weight)))
        now = self._clock()
        with self._lock:
            with self._tx() as conn:
                known = {r["id"]: r for r in conn.execute("SELECT id, provider, retired FROM keys")}
                for kid, provider, label, weight in rows:
                    conn.execute(
                        "INSERT INTO keys(id, provider, label, config_weight, created_at) VALUES (?,?,?,?,?)"
                        " ON CONFLICT(id) DO UPDATE SET label=excluded.label,"
                        " config_weight=excluded.config_weight, retired=0, retired_at=NULL",
                        (kid, provider, label, weight, now))
                    if kid in known and known[kid]["retired"]:
                        self._audit(conn, now, "config", "restore", kid,
                                    {"retired": True}, {"retired": False})
                for kid, r in known.items():
                    if kid not in secrets and not r["retired"]:
                        conn.execute("UPDATE keys SET retired=1, retired_at=? WHERE id=?", (now, kid))
                        self._audit(conn, now, "config", "retire", kid, {"retired": False}, {"retired": True})
            self._secrets = secrets
            self._reload()

    # --- the request path ---------------------------------------------------------------------

    def acquire(self, provider: str, model: str, exclude: frozenset[str] = frozenset()) -> Key:
        """A usable key for (provider, model), or NoKeyAvailable (429 / 503) at once; never blocks long."""
        with self._lock:
            self._maybe_refresh()
            now = self._clock()
            s = self.settings
            candidates, probes = [], []
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
            if candidates:
                weighted = [(kid, selection.effective_weight(
                    self._states[kid].weight,
                    health.current(self._states[kid].health, self._states[kid].health_at, now,
                                   s.health_half_life_s),
                    s.health_floor)) for kid in candidates]
                pick = selection.smooth_wrr(selection.rotate(weighted, self._offset),
                                            self._wrr.setdefault(provider, {}))
                return self._key(pick)
            verdicts = [(kid, self._judge(self._states[kid], model, now, exclude))
                        for kid in self._by_provider.get(provider, ())]
            raise no_key_error(provider, model, verdicts)

    def record(self, key_id: str, model: str, outcome: str, *, latency_ms: float | None = None,
               retry_after: float | None = None, daily: bool = False, error: str | None = None) -> None:
        """Account one upstream attempt made with ``key_id``; transitions are persisted at once."""
        if outcome not in errors.OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        s = self.settings
        now = self._clock()
        with self._lock:
            st = self._states.get(key_id)
            if st is None:
                log.warning("record() for unknown key %s ignored", key_id)
                return
            err = scrub(error, self._secrets.get(key_id), s.max_error_len)
            p = self._pending.setdefault(key_id, _Pending())
            p.requests += 1
            p.last_used_at = now
            if outcome in (errors.QUOTA, errors.AUTH, errors.TRANSIENT):
                p.errors += 1
                p.last_error, p.last_error_at = err or outcome, now
            if outcome == errors.OK and latency_ms is not None and latency_ms >= 0:
                p.latency_ms_total += latency_ms
                p.latency_samples += 1
            x = health.observation(outcome, latency_ms, s.slow_latency_ms)
            if x is not None:
                p.obs.append((now, x))
                st.health, st.health_at = health.observe(st.health, st.health_at, now, x,
                                                         half_life=s.health_half_life_s, alpha=s.health_alpha)
            nb = self._next_breaker(st.breaker, outcome, now)
            if nb != st.breaker:
                st.breaker = nb
                self._write(self._tx_breaker(key_id, outcome, now), key_id)
            if outcome == errors.QUOTA:
                until = cooldown.cooldown_until(now, retry_after=retry_after, daily=daily,
                                                default_s=s.default_cooldown_s, min_s=s.min_cooldown_s,
                                                tz=s.reset_tz(st.provider))
                cds = self._cooldowns.setdefault(key_id, {})
                if until > cds.get(model, -math.inf):  # the DB keeps the max anyway; skip useless writes
                    cds[model] = until
                    self._write(self._tx_cooldown(key_id, model, until), key_id)
            elif outcome == errors.AUTH and self._states[key_id].status != STATUS_INVALID:
                self._states[key_id].status = STATUS_INVALID  # _write may have replaced the view object
                self._write(self._tx_invalid(key_id, err, now), key_id)

    # --- admin --------------------------------------------------------------------------------

    def describe(self) -> list[dict]:
        """Every active (not retired) key, for the admin listing."""
        with self._lock:
            self.flush()
            self._maybe_refresh(force=True)
            now = self._clock()
            active = [st for st in self._states.values() if not st.retired]
            return [self._public(st, now) for st in sorted(active, key=lambda k: (k.provider, k.id))]

    def get(self, key_id: str) -> dict | None:
        with self._lock:
            self.flush()
            self._maybe_refresh(force=True)
            st = self._states.get(key_id)
            return None if st is None else self._public(st, self._clock())

    def enable(self, key_id: str, actor: str) -> None:
        self._admin(key_id, actor, "enable", lambda c, now: c.execute(
            "UPDATE keys SET enabled=1, disabled_reason=NULL WHERE id=?", (key_id,)))

    def disable(self, key_id: str, reason: str, actor: str) -> None:
        self._admin(key_id, actor, "disable", lambda c, now: c.execute(
            "UPDATE keys SET enabled=0, disabled_reason=? WHERE id=?", (reason or None, key_id)))

    def set_weight(self, key_id: str, weight: float, actor: str) -> None:
        w = _check_weight(weight)
        self._admin(key_id, actor, "set_weight", lambda c, now: c.execute(
            "UPDATE keys SET weight_override=? WHERE id=?", (w, key_id)))

    def reset(self, key_id: str, actor: str) -> None:
        """Close the circuit, clear cooldowns and invalid status, health back to 1."""
        def apply(c: sqlite3.Connection, now: float) -> None:
            c.execute("UPDATE keys SET circuit='closed', open_until=NULL, failures=0, last_failure_at=NULL,"
                      " probe_at=NULL, status='ok', status_reason=NULL, status_at=?, health=1.0, health_at=?"
                      " WHERE id=?", (now, now, key_id))
            c.execute("DELETE FROM key_cooldowns WHERE key_id=?", (key_id,))
        with self._lock:
            self._admin(key_id, actor, "reset", apply)
            p = self._pending.get(key_id)
            if p:
                p.obs.clear()
            self._load_key(key_id)

    def revalidate(self, key_id: str, actor: str) -> None:
        """Ask for a probe of an invalid key at the next revalidation round."""
        self._admin(key_id, actor, "revalidate", lambda c, now: c.execute(
            "UPDATE keys SET last_probe_at=NULL WHERE id=?", (key_id,)))

    def due_for_revalidation(self) -> list[Key]:
        """Invalid keys whose probe is due, each claimed for this worker (no two workers probe one key)."""
        now = self._clock()
        with self._lock:
            self._maybe_refresh(force=True)
            due = [st.id for st in self._states.values()
                   if st.status == STATUS_INVALID and not st.retired and st.id in self._secrets]
            claimed = []
            for kid in due:
                try:
                    cur = self._conn.execute(
                        "UPDATE keys SET last_probe_at=? WHERE id=? AND status='invalid' AND retired=0"
                        " AND (last_probe_at IS NULL OR last_probe_at<=?)",
                        (now, kid, now - self.settings.revalidate_interval_s))
                except sqlite3.OperationalError as exc:
                    log.warning("revalidation claim for %s failed: %s", kid, exc)
                    continue
                if cur.rowcount == 1:
                    claimed.append(kid)
                    self._load_key(kid)
            return [self._key(kid) for kid in claimed]

    def record_probe(self, key_id: str, ok: bool) -> None:
        """Result of a revalidation probe: a pass restores an invalid key to ``ok``."""
        now = self._clock()

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE keys SET last_probe_at=? WHERE id=?", (now, key_id))
            if ok:
                cur = conn.execute("UPDATE keys SET status='ok', status_reason=NULL, status_at=?"
                                   " WHERE id=? AND status='invalid'", (now, key_id))
                if cur.rowcount:
                    self._audit(conn, now, "system", "revalidated", key_id,
                                {"status": STATUS_INVALID}, {"status": STATUS_OK})
        with self._lock:
            if key_id in self._states:
                self._write(fn, key_id)

    def audit_event(self, actor: str, action: str, before: dict | None = None,
                    after: dict | None = None) -> None:
        """Audit an operator action that concerns no single key (e.g. a config reload)."""
        with self._lock, self._tx() as conn:
            self._audit(conn, self._clock(), actor, action, None, before, after)

    def audit(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, at, actor, action, key_id, before, after FROM audit ORDER BY id DESC LIMIT ?",
                (int(limit),)).fetchall()
        return [{"id": r["id"], "at": r["at"], "actor": r["actor"], "action": r["action"],
                 "key_id": r["key_id"],
                 "before": json.loads(r["before"]) if r["before"] else None,
                 "after": json.loads(r["after"]) if r["after"] else None} for r in rows]

    def usable_count(self) -> int:
        """Active keys usable for some model right now (cooldowns are per model and not counted)."""
        with self._lock:
            self._maybe_refresh()
            now = self._clock()
            return sum(1 for st in self._states.values()
                       if not st.retired and self._judge(st, None, now, frozenset()).usable)

    # --- snapshot -----------------------------------------------------------------------------

    def export_snapshot(self) -> dict:
        with self._lock:
            self.flush()
            now = self._clock()
            conn = self._conn
            conn.execute("BEGIN")
            try:
                rows = conn.execute(SELECT_KEYS + " ORDER BY id").fetchall()
                cds = conn.execute("SELECT key_id, model, until FROM key_cooldowns WHERE until > ?",
                                   (now,)).fetchall()
            finally:
                conn.execute("COMMIT")
        by_key: dict[str, dict[str, float]] = {}
        for r in cds:
            by_key.setdefault(r["key_id"], {})[r["model"]] = r["until"]
        return snapshot.document([snapshot.entry(from_row(r), by_key.get(r["id"], {})) for r in rows], now)

    def import_snapshot(self, doc: dict, actor: str) -> None:
        """Validate the whole document, then apply it in one transaction (all or nothing).

        Keys absent from the document are left as they are; keys unknown to this database are
        inserted as retired (their secret is not known until config names them).
        """
        entries = snapshot.validate(doc)
        now = self._clock()
        with self._lock:
            with self._tx() as conn:
                known = {r["id"]: r["provider"] for r in conn.execute("SELECT id, provider FROM keys")}
                for i, e in enumerate(entries):
                    if e["id"] in known and known[e["id"]] != e["provider"]:
                        raise snapshot.SnapshotError(
                            f"keys[{i}]: key {e['id']} belongs to provider {known[e['id']]!r} here, "
                            f"not {e['provider']!r}")
                for e in entries:
                    self._import_entry(conn, e, known, now, actor)
            for e in entries:
                self._pending.pop(e["id"], None)
            self._reload()

    # --- persistence --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write batched counters and health observations; retry deferred transitions."""
        with self._lock:
            if self._closed:
                return
            retry, self._retry = self._retry, []
            for fn, kid in retry:
                self._write(fn, kid)
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            s = self.settings
            now = self._clock()
            try:
                with self._tx() as conn:
                    for kid, p in pending.items():
                        row = conn.execute("SELECT health, health_at, last_error_at FROM keys WHERE id=?",
                                           (kid,)).fetchone()
                        if row is None:
                            continue
                        h, at = row["health"], row["health_at"]
                        for t, x in p.obs:
                            h, at = health.observe(h, at, t, x, half_life=s.health_half_life_s,
                                                   alpha=s.health_alpha)
                        newer = p.last_error is not None and (
                            row["last_error_at"] is None or p.last_error_at >= row["last_error_at"])
                        conn.execute(
                            "UPDATE keys SET requests=requests+?, errors=errors+?,"
                            " latency_ms_total=latency_ms_total+?, latency_samples=latency_samples+?,"
                            " last_used_at=MAX(COALESCE(last_used_at, 0), ?), health=?, health_at=?,"
                            " last_error=CASE WHEN ? THEN ? ELSE last_error END,"
                            " last_error_at=CASE WHEN ? THEN ? ELSE last_error_at END WHERE id=?",
                            (p.requests, p.errors, p.latency_ms_total, p.latency_samples, p.last_used_at,
                             h, at, newer, p.last_error, newer, p.last_error_at, kid))
                    conn.execute("DELETE FROM key_cooldowns WHERE until < ?", (now - 3600,))
            except sqlite3.OperationalError as exc:
                log.warning("key counters flush deferred: %s", exc)
                self._pending = pending  # nothing else could record meanwhile: we hold the lock
                return
            for kid in pending:
                self._load_key(kid)

    def close(self) -> None:
        """Stop the flusher, flush, close the connection. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        with self._lock:
            self.flush()
            self._closed = True
            self._conn.close()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.settings.flush_interval_s):
            try:
                self.flush()
            except Exception:  # keep flushing; the next round retries
                log.exception("key counters flush failed")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write(self, fn: Tx, kid: str) -> None:
        """Run one state transition in its own transaction, then refresh that key's view.

        If the database stays locked past the busy timeout the transition is kept (the local view
        already obeys it) and retried by the next flush.
        """
        try:
            with self._tx() as conn:
                fn(conn)
        except sqlite3.OperationalError as exc:
            log.warning("key state write for %s deferred: %s", kid, exc)
            self._retry.append((fn, kid))
            return
        self._load_key(kid)

    def _maybe_refresh(self, force: bool = False) -> None:
        mono = time.monotonic()
        if not force and mono - self._checked_at < self.settings.refresh_interval_s:
            return
        self._checked_at = mono
        if self._conn.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            self._reload()

    def _reload(self) -> None:
        """Replace the in-memory view with the database's (small tables: all keys, live cooldowns)."""
        conn = self._conn
        now = self._clock()
        conn.execute("BEGIN")
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            rows = conn.execute(SELECT_KEYS).fetchall()
            cds = conn.execute("SELECT key_id, model, until FROM key_cooldowns WHERE until > ?",
                               (now,)).fetchall()
        finally:
            conn.execute("COMMIT")
        self._states = {r["id"]: from_row(r) for r in rows}
        by_provider: dict[str, list[str]] = {}
        for kid in sorted(self._states):
            by_provider.setdefault(self._states[kid].provider, []).append(kid)
        self._by_provider = by_provider
        self._cooldowns = {}
        for r in cds:
            self._cooldowns.setdefault(r["key_id"], {})[r["model"]] = r["until"]
        for kid in self._pending:
            self._reapply(kid)
        self._data_version = version

    def _load_key(self, kid: str) -> None:
        row = self._conn.execute(SELECT_KEYS + " WHERE id=?", (kid,)).fetchone()
        if row is None:
            return
        if kid not in self._states:
            self._by_provider.setdefault(row["provider"], []).append(kid)
            self._by_provider[row["provider"]].sort()
        self._states[kid] = from_row(row)
        cds = self._conn.execute("SELECT model, until FROM key_cooldowns WHERE key_id=? AND until > ?",
                                 (kid, self._clock())).fetchall()
        self._cooldowns[kid] = {r["model"]: r["until"] for r in cds}
        self._reapply(kid)

    def _reapply(self, kid: str) -> None:
        """Unflushed health observations stay visible after a reload."""
        p, st = self._pending.get(kid), self._states.get(kid)
        if p is None or st is None:
            return
        for t, x in p.obs:
            st.health, st.health_at = health.observe(st.health, st.health_at, t, x,
                                                     half_life=self.settings.health_half_life_s,
                                                     alpha=self.settings.health_alpha)

    # --- transitions (each runs inside one transaction and re-reads the row first) -------------

    def _next_breaker(self, b: breaker.Breaker, outcome: str, now: float) -> breaker.Breaker:
        s = self.settings
        return breaker.on_outcome(b, outcome, now, threshold=s.breaker_failures, window=s.breaker_window_s,
                                  open_s=s.breaker_open_s)

    def _tx_breaker(self, kid: str, outcome: str, now: float) -> Tx:
        def fn(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT circuit, open_until, failures, last_failure_at, probe_at FROM keys"
                               " WHERE id=?", (kid,)).fetchone()
            if row is None:
                return
            b = breaker_from_row(row)
            nb = self._next_breaker(b, outcome, now)
            if nb != b:
                conn.execute("UPDATE keys SET circuit=?, open_until=?, failures=?, last_failure_at=?,"
                             " probe_at=? WHERE id=?", (*astuple(nb), kid))
        return fn

    def _tx_cooldown(self, kid: str, model: str, until: float) -> Tx:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO key_cooldowns(key_id, model, until) VALUES (?,?,?)"
                         " ON CONFLICT(key_id, model) DO UPDATE SET until=MAX(until, excluded.until)",
                         (kid, model, until))
        return fn

    def _tx_invalid(self, kid: str, reason: str | None, now: float) -> Tx:
        def fn(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE keys SET status='invalid', status_reason=?, status_at=?,"
                               " last_probe_at=? WHERE id=? AND status='ok'", (reason, now, now, kid))
            if cur.rowcount:
                self._audit(conn, now, "system", "invalid", kid, {"status": STATUS_OK},
                            {"status": STATUS_INVALID, "reason": reason})
        return fn

    def _claim_probe(self, kid: str, now: float) -> bool:
        """Claim the single half-open probe across all workers (one conditional UPDATE)."""
        try:
            cur = self._conn.execute(
                "UPDATE keys SET circuit='half_open', probe_at=? WHERE id=? AND ("
                " (circuit='open' AND (open_until IS NULL OR open_until<=?))"
                " OR (circuit='half_open' AND (probe_at IS NULL OR probe_at<=?)))",
                (now, kid, now, now - self.settings.probe_timeout_s))
        except sqlite3.OperationalError as exc:
            log.warning("half-open claim for %s failed: %s", kid, exc)
            return False
        self._load_key(kid)
        return cur.rowcount == 1

    def _admin(self, kid: str, actor: str, action: str,
               apply: Callable[[sqlite3.Connection, float], object]) -> None:
        """One operator change and its audit row in one transaction; KeyError for an unknown id."""
        now = self._clock()
        with self._lock:
            with self._tx() as conn:
                before = self._audit_view(conn, kid, now)
                if before is None:
                    raise KeyError(kid)
                apply(conn, now)
                self._audit(conn, now, actor, action, kid, before, self._audit_view(conn, kid, now))
            self._load_key(kid)

    def _import_entry(self, conn: sqlite3.Connection, e: dict, known: dict[str, str], now: float,
                      actor: str) -> None:
        kid = e["id"]
        before = None
        if kid in known:
            before = self._audit_view(conn, kid, now)
        else:
            conn.execute("INSERT INTO keys(id, provider, label, config_weight, retired, retired_at,"
                         " created_at) VALUES (?,?,?,?,1,?,?)",
                         (kid, e["provider"], e["label"], e["weight"] if e["weight"] > 0 else 1.0, now, now))
        c, n = e["circuit"], e["counters"]
        conn.execute(
            "UPDATE keys SET weight_override=?, enabled=?, disabled_reason=?, status=?, status_reason=?,"
            " status_at=?, circuit=?, open_until=?, failures=?, last_failure_at=?, probe_at=?, health=?,"
            " health_at=?, requests=?, errors=?, latency_ms_total=?, latency_samples=?, last_error=?,"
            " last_error_at=?, last_used_at=?, last_probe_at=? WHERE id=?",
            (e["weight_override"], int(e["enabled"]), e["disabled_reason"], e["status"], e["status_reason"],
             e["status_at"], c["state"], c["open_until"], c["failures"], c["last_failure_at"], c["probe_at"],
             e["health"], e["health_at"], n["requests"], n["errors"], n["latency_ms_total"],
             n["latency_samples"], e["last_error"], e["last_error_at"], e["last_used_at"], e["last_probe_at"],
             kid))
        conn.execute("DELETE FROM key_cooldowns WHERE key_id=?", (kid,))
        conn.executemany("INSERT INTO key_cooldowns(key_id, model, until) VALUES (?,?,?)",
                         [(kid, m, u) for m, u in e["cooldowns"].items()])
        self._audit(conn, now, actor, "import", kid, before, self._audit_view(conn, kid, now))

    @staticmethod
    def _audit_view(conn: sqlite3.Connection, kid: str, now: float) -> dict | None:
        r = conn.execute("SELECT enabled, disabled_reason, status, config_weight, weight_override, circuit,"
                         " open_until, failures, health FROM keys WHERE id=?", (kid,)).fetchone()
        if r is None:
            return None
        cds = conn.execute("SELECT model, until FROM key_cooldowns WHERE key_id=? AND until > ?"
                           " ORDER BY model", (kid, now)).fetchall()
        return {"enabled": bool(r["enabled"]), "disabled_reason": r["disabled_reason"], "status": r["status"],
                "weight": r["config_weight"] if r["weight_override"] is None else r["weight_override"],
                "circuit": r["circuit"], "open_until": r["open_until"], "failures": r["failures"],
                "health": round(r["health"], 4), "cooldowns": {c["model"]: c["until"] for c in cds}}

    @staticmethod
    def _audit(conn: sqlite3.Connection, now: float, actor: str, action: str, kid: str | None,
               before: dict | None, after: dict | None) -> None:
        conn.execute("INSERT INTO audit(at, actor, action, key_id, before, after) VALUES (?,?,?,?,?,?)",
                     (now, actor, action, kid, None if before is None else json.dumps(before, sort_keys=True),
                      None if after is None else json.dumps(after, sort_keys=True)))

    # --- views ----------------------------------------------------------------------------------

    def _judge(self, st: KeyState, model: str | None, now: float, exclude: frozenset[str]) -> Verdict:
        until = self._cooldowns.get(st.id, {}).get(model) if model is not None else None
        return judge(st, until, now, probe_timeout=self.settings.probe_timeout_s, excluded=st.id in exclude,
                     has_secret=st.id in self._secrets)

    def key(self, key_id: str) -> Key | None:
        """The active key with this id (its secret included, for a provider call), else None."""
        with self._lock:
            st = self._states.get(key_id)
            if st is None or st.retired or key_id not in self._secrets:
                return None
            return self._key(key_id)

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
            "status": st.status, "status_reason": st.status_reason,
            "weight": st.weight,
            "health": round(health.current(st.health, st.health_at, now, s.health_half_life_s), 3),
            "circuit": circuit, "circuit_seconds_left": None if left is None else round(left, 1),
            "cooldowns": cds,
            "requests": st.requests, "errors": st.errors,
            "latency_ms_avg": (round(st.latency_ms_total / st.latency_samples, 1)
                               if st.latency_samples else None),
            "last_error": st.last_error, "last_used_at": st.last_used_at,
            "usable": self._judge(st, None, now, frozenset()).usable,
        }
