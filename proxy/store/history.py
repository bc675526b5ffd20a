"""Portable SQL for key history (part of ``SqlTx``): minute / hour rollups per key and model, and the
periods keys spent cooling down or with an open circuit (``migrations/0012_history.sql``).

Rows are added to (``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x``), so every worker's
batch adds up in the same row; the max latency uses CASE (PostgreSQL has no two-argument MAX).
Pruning deletes in bounded batches (the background work calls it, never the request path).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from proxy.keys.history import BUCKETS, OUTCOMES, Period, Row

_HIST = tuple(f"h{i}" for i in range(BUCKETS))
_SUMS = ("requests", *OUTCOMES, "http_429", "tokens", "latency_sum", "latency_n", *_HIST)
_COLUMNS = ("step", "bucket", "key_id", "model", "provider", *_SUMS, "latency_max", "latency_min")
_UPSERT = (f"INSERT INTO key_history({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
           " ON CONFLICT(step, bucket, key_id, model) DO UPDATE SET "
           + ", ".join(f"{c} = key_history.{c} + excluded.{c}" for c in _SUMS)
           + ", latency_max = CASE WHEN excluded.latency_max > key_history.latency_max"
             " THEN excluded.latency_max ELSE key_history.latency_max END"
           # SET expressions see the row as it was: latency_n is the old count here
           + ", latency_min = CASE WHEN excluded.latency_n = 0 THEN key_history.latency_min"
             " WHEN key_history.latency_n = 0 OR excluded.latency_min < key_history.latency_min"
             " THEN excluded.latency_min ELSE key_history.latency_min END")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM key_history"


class HistoryTx(Protocol):
    """The history half of a transaction (``proxy.store.tx.SqlTx`` implements it)."""

    def add_history(self, rows: Sequence[Row], periods: Sequence[Period]) -> None: ...
    def history(self, step: int, start: float, end: float, *, key_id: str | None = None,
                provider: str | None = None, model: str | None = None) -> list[Row]: ...
    def history_periods(self, start: float, end: float, *, key_id: str | None = None,
                        provider: str | None = None, model: str | None = None) -> list[Period]: ...
    def purge_history(self, step: int, before: float, limit: int) -> int: ...
    def purge_periods(self, before: float, limit: int) -> int: ...


def _row(r: tuple) -> Row:
    v = dict(zip(_COLUMNS, r, strict=True))
    return Row(v["step"], v["bucket"], v["key_id"], v["model"], v["provider"], requests=v["requests"],
               outcomes={o: v[o] for o in OUTCOMES}, http_429=v["http_429"], tokens=v["tokens"],
               latency_sum=v["latency_sum"], latency_n=v["latency_n"], latency_max=v["latency_max"],
               latency_min=v["latency_min"],
               hist=[v[h] for h in _HIST])


class SqlHistory:
    """Key history rows (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def add_history(self, rows: Sequence[Row], periods: Sequence[Period]) -> None:
        for r in rows:
            self._run(_UPSERT, (r.step, r.bucket, r.key_id, r.model, r.provider, r.requests,
                                *(r.outcomes[o] for o in OUTCOMES), r.http_429, r.tokens, r.latency_sum,
                                r.latency_n, *r.hist, r.latency_max, r.latency_min))
        for p in periods:
            self._run("INSERT INTO key_periods(key_id, kind, model, start, until) VALUES (?,?,?,?,?)",
                      (p.key_id, p.kind, p.model, p.start, p.until))

    def history(self, step: int, start: float, end: float, *, key_id: str | None = None,
                provider: str | None = None, model: str | None = None) -> list[Row]:
        """Rows of resolution ``step`` with ``start <= bucket < end``, optionally of one key / provider /
        model, in bucket order."""
        where = ["step = ?", "bucket >= ?", "bucket < ?"]
        # integers only: PostgreSQL types these parameters as the BIGINT column and refuses "1.5"
        # (for an integer bucket, bucket < end is bucket < ceil(end))
        params: list[object] = [step, int(start), math.ceil(end)]
        for col, value in (("key_id", key_id), ("provider", provider), ("model", model)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY bucket, key_id, model"
        return [_row(tuple(r)) for r in self._run(sql, params).fetchall()]

    def history_periods(self, start: float, end: float, *, key_id: str | None = None,
                        provider: str | None = None, model: str | None = None) -> list[Period]:
        """Periods overlapping [start, end); ``provider`` through the keys table; ``model`` keeps that
        model's cooldowns and every circuit period."""
        where = ["until > ?", "start < ?"]
        params: list[object] = [start, end]
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if provider is not None:
            where.append("key_id IN (SELECT id FROM keys WHERE provider = ?)")
            params.append(provider)
        if model is not None:
            where.append("(model = ? OR model = '')")
            params.append(model)
        rows = self._run("SELECT key_id, kind, model, start, until FROM key_periods WHERE "
                         + " AND ".join(where) + " ORDER BY start", params).fetchall()
        return [Period(*tuple(r)) for r in rows]

    def purge_history(self, step: int, before: float, limit: int) -> int:
        cur = self._run("DELETE FROM key_history WHERE step = ? AND bucket IN (SELECT bucket FROM key_history"
                        " WHERE step = ? AND bucket < ? ORDER BY bucket LIMIT ?)",
                        (step, step, int(before), int(limit)))
        return int(cur.rowcount or 0)

    def purge_periods(self, before: float, limit: int) -> int:
        cur = self._run("DELETE FROM key_periods WHERE id IN"
                        " (SELECT id FROM key_periods WHERE until < ? ORDER BY id LIMIT ?)",
                        (before, int(limit)))
        return int(cur.rowcount or 0)
