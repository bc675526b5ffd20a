"""Portable SQL for usage accounting (part of ``SqlTx``): raw usage rows, daily rollups, the report.

Raw rows (``usage_records``) are one per data-plane request and kept ``accounting.retention_days``;
rollups (``usage_daily``) hold per (local day, client, model) sums and are kept for ever. Both are
written by the same flush transaction, so a report never sees one without the other.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

RECORD_COLUMNS = ("at", "day", "request_id", "endpoint", "client_id", "client_name", "team", "model",
                  "provider", "upstream_model", "key_id", "status", "outcome", "prompt_tokens",
                  "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "latency_ms",
                  "first_byte_ms", "stream", "cached")

ROLLUP_COLUMNS = ("day", "client_id", "model", "client_name", "team", "requests", "errors", "prompt_tokens",
                  "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "unpriced_requests")

# group_by name -> the columns it adds to each row (raw rows have them all; rollups only day/client/model)
GROUPS: dict[str, tuple[str, ...]] = {
    "day": ("day",),
    "client": ("client_id",),
    "model": ("model",),
    "route": ("provider", "upstream_model"),
    "key": ("key_id",),
}
ROLLUP_GROUPS = ("day", "client", "model")

_CHUNK = 50  # raw rows per INSERT (22 columns: 1,100 parameters, far below either engine's limit)
_ROW = f"({', '.join('?' * len(RECORD_COLUMNS))})"


def _insert(rows: int) -> str:
    return f"INSERT INTO usage_records({', '.join(RECORD_COLUMNS)}) VALUES {', '.join([_ROW] * rows)}"


_BUMP = (f"INSERT INTO usage_daily({', '.join(ROLLUP_COLUMNS)})"
         f" VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))})"
         " ON CONFLICT(day, client_id, model) DO UPDATE SET"
         " client_name = excluded.client_name, team = excluded.team,"
         " requests = usage_daily.requests + excluded.requests,"
         " errors = usage_daily.errors + excluded.errors,"
         " prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,"
         " completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,"
         " cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens,"
         " reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens,"
         " cost_usd = usage_daily.cost_usd + excluded.cost_usd,"
         " unpriced_requests = usage_daily.unpriced_requests + excluded.unpriced_requests")

# the sums every report row carries, over raw rows and over rollups
_RAW_SUMS = ("COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(prompt_tokens),"
             " SUM(completion_tokens), SUM(cached_tokens), SUM(reasoning_tokens), SUM(cost_usd),"
             " SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END)")
_ROLLUP_SUMS = ("SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),"
                " SUM(reasoning_tokens), SUM(cost_usd), SUM(unpriced_requests)")
SUM_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
              "cost_usd", "unpriced_requests")


class UsageTx(Protocol):
    """The usage half of a transaction (``proxy.store.tx.SqlTx`` implements it)."""

    def add_usage(self, records: Sequence[Sequence[Any]], rollups: Sequence[Sequence[Any]]) -> None: ...
    def purge_usage(self, before: float, limit: int) -> int: ...
    def usage_raw(self, start: float, end: float, groups: Sequence[str], client: str | None,
                  model: str | None, client_id: str | None = None) -> list[dict]: ...
    def usage_rollup(self, first_day: str, last_day: str, groups: Sequence[str], client: str | None,
                     model: str | None, client_id: str | None = None) -> list[dict]: ...
    def usage_count(self) -> int: ...


class SqlUsage:
    """Usage rows and rollups (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def add_usage(self, records: Sequence[Sequence[Any]], rollups: Sequence[Sequence[Any]]) -> None:
        """Insert raw rows (``RECORD_COLUMNS`` order) and add rollup deltas (``ROLLUP_COLUMNS`` order)."""
        for i in range(0, len(records), _CHUNK):  # multi-row: one statement (one round trip) per chunk
            chunk = records[i:i + _CHUNK]
            self._run(_insert(len(chunk)), [v for row in chunk for v in row])
        for row in rollups:
            self._run(_BUMP, tuple(row))

    def purge_usage(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` raw rows older than ``before``; how many were deleted."""
        cur = self._run("DELETE FROM usage_records WHERE id IN"
                        " (SELECT id FROM usage_records WHERE at < ? ORDER BY id LIMIT ?)",
                        (before, int(limit)))
        return int(cur.rowcount or 0)

    def usage_count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM usage_records").fetchone()[0])

    def usage_raw(self, start: float, end: float, groups: Sequence[str], client: str | None,
                  model: str | None, client_id: str | None = None) -> list[dict]:
        """Sums over raw rows with ``start <= at < end``, grouped by ``groups`` (names of ``GROUPS``);
        ``client`` matches an id or a name, ``client_id`` only an id (and uses the (client_id, at) index)."""
        where, params = ["at >= ?", "at < ?"], [start, end]
        return self._report("usage_records", _RAW_SUMS, where, params, groups, client, model, client_id)

    def usage_rollup(self, first_day: str, last_day: str, groups: Sequence[str], client: str | None,
                     model: str | None, client_id: str | None = None) -> list[dict]:
        """Sums over rollups of the local days ``first_day`` .. ``last_day`` (inclusive, YYYY-MM-DD)."""
        bad = [g for g in groups if g not in ROLLUP_GROUPS]
        if bad:
            raise ValueError(f"rollups have no {bad[0]!r} grouping")
        where, params = ["day >= ?", "day <= ?"], [first_day, last_day]
        return self._report("usage_daily", _ROLLUP_SUMS, where, params, groups, client, model, client_id)

    def _report(self, table: str, sums: str, where: list[str], params: list, groups: Sequence[str],
                client: str | None, model: str | None, client_id: str | None) -> list[dict]:
        cols: list[str] = []
        for g in groups:
            cols += [c for c in GROUPS[g] if c not in cols]  # names from a fixed table: no injection
        if client is not None:
            where.append("(client_id = ? OR client_name = ?)")
            params += [client, client]
        if client_id is not None:
            where.append("client_id = ?")
            params.append(client_id)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        extra = ["MAX(client_name)", "MAX(team)"] if "client" in groups else []  # names shown with ids
        names = [*cols, *(["client_name", "team"] if extra else [])]
        select = ", ".join([*cols, *extra, sums])
        sql = f"SELECT {select} FROM {table} WHERE {' AND '.join(where)}"
        if cols:
            sql += f" GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}"
        out = []
        for row in self._run(sql, params).fetchall():
            row = tuple(row)
            values = dict(zip(names, row[:len(names)], strict=True))
            totals = dict(zip(SUM_FIELDS, row[len(names):], strict=True))
            if not totals["requests"]:
                continue  # no group at all (an ungrouped SUM over nothing gives one row of NULLs)
            for name in SUM_FIELDS:
                if name != "cost_usd":
                    totals[name] = int(totals[name] or 0)
            out.append({**values, **totals})
        return out
