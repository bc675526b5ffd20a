"""Portable SQL for key rows and per-model cooldowns (part of ``KeyTx``).

Only SQL that SQLite and PostgreSQL both run lives here (``ON CONFLICT ... DO UPDATE ... WHERE``,
sub-selects in DELETE, no MAX(a, b) scalar). Statements use ``?`` placeholders on both backends. The
caller owns the transaction.
"""
from __future__ import annotations

from typing import Any

from proxy.keys.breaker import Breaker
from proxy.keys.state import KeyState

from .base import MAX_COOLDOWNS_PER_KEY

# Columns of the ``keys`` table, in order (migrations/0002_keys.sql).
COLUMNS = (
    "id", "provider", "label", "config_weight", "weight_override", "enabled", "disabled_reason",
    "status", "status_reason", "status_at", "retired", "retired_at",
    "circuit", "open_until", "failures", "last_failure_at", "probe_at",
    "health", "health_at", "requests", "errors", "latency_ms_total", "latency_samples",
    "last_error", "last_error_at", "last_used_at", "last_probe_at", "created_at",
)
_SELECT_KEYS = f"SELECT {', '.join(COLUMNS)} FROM keys"
_BREAKER_COLUMNS = ("circuit", "open_until", "failures", "last_failure_at", "probe_at")
# what ``update`` may set: every column but the identity ones, plus ``breaker`` (its five columns)
_UPDATABLE = frozenset(COLUMNS) - {"id", "provider", "created_at"}
_BOOL_COLUMNS = ("enabled", "retired")


def key_state(row: tuple) -> KeyState:
    r = dict(zip(COLUMNS, row, strict=True))
    return KeyState(
        id=r["id"], provider=r["provider"], label=r["label"],
        config_weight=r["config_weight"], weight_override=r["weight_override"],
        enabled=bool(r["enabled"]), disabled_reason=r["disabled_reason"],
        status=r["status"], status_reason=r["status_reason"], status_at=r["status_at"],
        retired=bool(r["retired"]), retired_at=r["retired_at"],
        breaker=Breaker(r["circuit"], r["open_until"], r["failures"], r["last_failure_at"], r["probe_at"]),
        health=r["health"], health_at=r["health_at"],
        requests=r["requests"], errors=r["errors"],
        latency_ms_total=r["latency_ms_total"], latency_samples=r["latency_samples"],
        last_error=r["last_error"], last_error_at=r["last_error_at"],
        last_used_at=r["last_used_at"], last_probe_at=r["last_probe_at"], created_at=r["created_at"],
    )


class SqlKeys:
    """The key and cooldown half of ``KeyTx`` (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    # --- keys -----------------------------------------------------------------------------------

    def keys(self) -> list[KeyState]:
        return [key_state(tuple(r)) for r in self._run(_SELECT_KEYS + " ORDER BY id").fetchall()]

    def key(self, kid: str) -> KeyState | None:
        row = self._run(_SELECT_KEYS + " WHERE id=?", (kid,)).fetchone()
        return None if row is None else key_state(tuple(row))

    def upsert_configured(self, kid: str, provider: str, label: str | None, weight: float,
                          now: float) -> None:
        """A key named by config: inserted, or its weight refreshed and un-retired; its label too when
        config gives one (else an operator's label, ``PATCH /admin/api/keys/{id}``, stays)."""
        self._run("INSERT INTO keys(id, provider, label, config_weight, created_at) VALUES (?,?,?,?,?)"
                  " ON CONFLICT(id) DO UPDATE SET label=COALESCE(excluded.label, keys.label),"
                  " config_weight=excluded.config_weight, retired=0, retired_at=NULL",
                  (kid, provider, label, weight, now))

    def insert_retired(self, kid: str, provider: str, label: str | None, weight: float,
                       now: float) -> None:
        """A key known only from a snapshot: kept retired until config names it."""
        self._run("INSERT INTO keys(id, provider, label, config_weight, retired, retired_at, created_at)"
                  " VALUES (?,?,?,?,1,?,?)", (kid, provider, label, weight, now, now))

    def update(self, kid: str, **fields: Any) -> None:
        """Set columns of one key; ``breaker=Breaker(...)`` sets the five circuit columns."""
        b = fields.pop("breaker", None)
        if b is not None:
            fields.update(zip(_BREAKER_COLUMNS, (b.state, b.open_until, b.failures, b.last_failure_at,
                                                 b.probe_at), strict=True))
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable key column(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        for name in _BOOL_COLUMNS:
            if name in fields:
                fields[name] = int(bool(fields[name]))
        names = sorted(fields)
        self._run(f"UPDATE keys SET {', '.join(f'{n}=?' for n in names)} WHERE id=?",
                  [fields[n] for n in names] + [kid])

    def add_counters(self, kid: str, requests: int, errors: int, latency_ms_total: float,
                     latency_samples: int) -> None:
        self._run("UPDATE keys SET requests=requests+?, errors=errors+?,"
                  " latency_ms_total=latency_ms_total+?, latency_samples=latency_samples+? WHERE id=?",
                  (requests, errors, latency_ms_total, latency_samples, kid))

    def mark_invalid(self, kid: str, reason: str | None, now: float) -> bool:
        cur = self._run("UPDATE keys SET status='invalid', status_reason=?, status_at=?, last_probe_at=?"
                        " WHERE id=? AND status='ok'", (reason, now, now, kid))
        return cur.rowcount == 1

    def mark_valid(self, kid: str, now: float) -> bool:
        cur = self._run("UPDATE keys SET status='ok', status_reason=NULL, status_at=?"
                        " WHERE id=? AND status='invalid'", (now, kid))
        return cur.rowcount == 1

    def claim_half_open(self, kid: str, now: float, stale_before: float) -> bool:
        """Flip an open circuit past ``open_until`` (or a half-open one whose probe was claimed before
        ``stale_before``) to half-open, claimed now: exactly one caller across all workers wins."""
        cur = self._run("UPDATE keys SET circuit='half_open', probe_at=? WHERE id=? AND ("
                        " (circuit='open' AND (open_until IS NULL OR open_until<=?))"
                        " OR (circuit='half_open' AND (probe_at IS NULL OR probe_at<=?)))",
                        (now, kid, now, stale_before))
        return cur.rowcount == 1

    def claim_revalidation(self, kid: str, now: float, due_before: float) -> bool:
        """Claim the probe of an invalid key last probed before ``due_before`` (one worker wins)."""
        cur = self._run("UPDATE keys SET last_probe_at=? WHERE id=? AND status='invalid' AND retired=0"
                        " AND (last_probe_at IS NULL OR last_probe_at<=?)", (now, kid, due_before))
        return cur.rowcount == 1

    # --- per-model cooldowns --------------------------------------------------------------------

    def cooldowns(self, kid: str, now: float) -> dict[str, float]:
        rows = self._run("SELECT model, until FROM key_cooldowns WHERE key_id=? AND until > ? ORDER BY model",
                         (kid, now)).fetchall()
        return {m: u for m, u in rows}

    def all_cooldowns(self, now: float) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for kid, m, u in self._run("SELECT key_id, model, until FROM key_cooldowns WHERE until > ?"
                                   " ORDER BY key_id, model", (now,)).fetchall():
            out.setdefault(kid, {})[m] = u
        return out

    def raise_cooldown(self, kid: str, model: str, until: float, now: float,
                       limit: int = MAX_COOLDOWNS_PER_KEY) -> None:
        """Cool ``model`` on ``kid`` until ``until`` (never shortens); keep at most ``limit`` rows per
        key: expired rows go first, then the soonest-expiring (as ``base.bounded_cooldowns``)."""
        self._run("INSERT INTO key_cooldowns(key_id, model, until) VALUES (?,?,?)"
                  " ON CONFLICT(key_id, model) DO UPDATE SET until=excluded.until"
                  " WHERE key_cooldowns.until < excluded.until", (kid, model, until))
        self._bound(kid, now, limit)

    def _bound(self, kid: str, now: float, limit: int) -> None:
        (count,) = self._run("SELECT COUNT(*) FROM key_cooldowns WHERE key_id=?", (kid,)).fetchone()
        if count <= limit:
            return
        self._run("DELETE FROM key_cooldowns WHERE key_id=? AND until <= ?", (kid, now))
        (count,) = self._run("SELECT COUNT(*) FROM key_cooldowns WHERE key_id=?", (kid,)).fetchone()
        if count > limit:
            self._run("DELETE FROM key_cooldowns WHERE key_id=? AND model IN (SELECT model FROM key_cooldowns"
                      " WHERE key_id=? ORDER BY until, model LIMIT ?)", (kid, kid, count - limit))

    def replace_cooldowns(self, kid: str, cooldowns: dict[str, float]) -> None:
        self._run("DELETE FROM key_cooldowns WHERE key_id=?", (kid,))
        for model, until in sorted(cooldowns.items()):
            self._run("INSERT INTO key_cooldowns(key_id, model, until) VALUES (?,?,?)", (kid, model, until))

    def purge_cooldowns(self, before: float) -> None:
        self._run("DELETE FROM key_cooldowns WHERE until < ?", (before,))
