"""Portable SQL for the response cache (part of ``SqlTx``): entries, their totals, LRU eviction.

``cache_totals`` keeps ``entries`` and ``bytes`` in step with ``cache_entries`` in the same
transactions, so a store checks its bounds without counting the table, plus the counters the admin
view shows (hits, misses, stores, evictions, expired). A lookup is a plain read (``cache_get``); the
workers batch what their hits changed (``used_at``, the counters) into ``cache_touch``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

EVICT_BATCH = 64  # rows read per eviction round
PURGE_EXPIRED = 32  # expired rows removed by each store (the rest by later ones)


class CacheTx(Protocol):
    """The cache half of a transaction (``proxy.store.tx.SqlTx`` implements it)."""

    def cache_get(self, key: str) -> tuple[bytes, float] | None: ...
    def cache_touch(self, used: Mapping[str, tuple[float, int]], counts: Mapping[str, int],
                    expired: Iterable[str], now: float) -> None: ...
    def cache_put(self, key: str, endpoint: str, model: str, answer: bytes, now: float, expires_at: float,
                  max_entries: int, max_bytes: int) -> int: ...
    def cache_totals(self) -> dict[str, int]: ...
    def cache_clear(self) -> int: ...


class SqlCache:
    """Cache rows (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def _bump(self, **deltas: int) -> None:
        for name, n in deltas.items():
            if n:
                self._run("UPDATE cache_totals SET n = n + ? WHERE name = ?", (int(n), name))

    def _drop(self, key: str) -> int:
        """Delete one entry and take it off the totals; its size (0 when it was not there)."""
        row = self._run("SELECT bytes FROM cache_entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return 0
        self._run("DELETE FROM cache_entries WHERE key = ?", (key,))
        self._bump(entries=-1, bytes=-int(row[0]))
        return int(row[0])

    def cache_get(self, key: str) -> tuple[bytes, float] | None:
        """The answer stored under ``key`` and when it expires (a read: no write lock needed)."""
        row = self._run("SELECT answer, expires_at FROM cache_entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else (bytes(row[0]), float(row[1]))

    def cache_touch(self, used: Mapping[str, tuple[float, int]], counts: Mapping[str, int],
                    expired: Iterable[str], now: float) -> None:
        """Apply a worker's batch: entries used (key → (last use, hits)), counter deltas, and entries
        found expired (deleted if they still are: a refresh may have replaced them)."""
        for key, (at, hits) in used.items():
            # CASE, not SQLite's scalar MAX(a, b): PostgreSQL has no two-argument MAX (it has GREATEST)
            self._run("UPDATE cache_entries SET used_at = CASE WHEN used_at < ? THEN ? ELSE used_at END,"
                      " hits = hits + ? WHERE key = ?", (at, at, int(hits), key))
        gone = 0
        for key in expired:
            row = self._run("SELECT expires_at FROM cache_entries WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] <= now:
                self._drop(key)
                gone += 1
        self._bump(**counts, expired=gone)

    def cache_put(self, key: str, endpoint: str, model: str, answer: bytes, now: float, expires_at: float,
                  max_entries: int, max_bytes: int) -> int:
        """Store (or replace) an entry, then delete expired entries and evict the least recently used
        ones until the totals are within the bounds; how many live entries were evicted."""
        self._drop(key)
        self._run("INSERT INTO cache_entries(key, endpoint, model, answer, bytes, created_at, expires_at,"
                  " used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (key, endpoint, model, answer, len(answer), now, expires_at, now))
        self._bump(entries=1, bytes=len(answer), stores=1)
        expired = self._run("SELECT key FROM cache_entries WHERE expires_at <= ? LIMIT ?",
                            (now, PURGE_EXPIRED)).fetchall()
        for (old,) in expired:
            self._drop(old)
        self._bump(expired=len(expired))
        evicted = 0
        while True:
            totals = self.cache_totals()
            if totals["entries"] <= max_entries and totals["bytes"] <= max_bytes:
                break
            rows = self._run("SELECT key, bytes FROM cache_entries WHERE key != ? ORDER BY used_at LIMIT ?",
                             (key, EVICT_BATCH)).fetchall()
            if not rows:
                break
            over_n, over_b = totals["entries"] - max_entries, totals["bytes"] - max_bytes
            for old, size in rows:
                if over_n <= 0 and over_b <= 0:
                    break
                self._drop(old)
                evicted += 1
                over_n, over_b = over_n - 1, over_b - int(size)
        self._bump(evictions=evicted)
        return evicted

    def cache_totals(self) -> dict[str, int]:
        return {str(name): int(n) for name, n in self._run("SELECT name, n FROM cache_totals").fetchall()}

    def cache_clear(self) -> int:
        """Delete every entry; how many there were (the counters are kept)."""
        n = int(self._run("SELECT COUNT(*) FROM cache_entries").fetchone()[0])
        self._run("DELETE FROM cache_entries")
        self._run("UPDATE cache_totals SET n = 0 WHERE name IN ('entries', 'bytes')")
        return n
