"""Portable SQL for the traffic inspector's ring (part of ``SqlTx``): one row per captured transaction.

The ring is bounded by the flush that inserts: in the same transaction, every row past the newest
``max_entries``, or past the newest rows whose bytes add up to at most ``max_bytes``, is deleted. Age is
the request's start (``at``, then id): a capture another worker flushes late still takes its place in
time, and is the one dropped when it is the oldest.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

SUMMARY_COLUMNS = ("id", "at", "request_id", "model", "client_id", "route", "status", "outcome",
                   "duration_ms", "bytes")
ENTRY_COLUMNS = (*SUMMARY_COLUMNS[1:], "doc")

_INSERT = (f"INSERT INTO inspector_entries({', '.join(ENTRY_COLUMNS)})"
           f" VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})")


_NEWEST = "ORDER BY at DESC, id DESC"
_TRIM = ("DELETE FROM inspector_entries WHERE id IN (SELECT id FROM ("
         f"SELECT id, ROW_NUMBER() OVER ({_NEWEST}) AS n,"
         f" SUM(bytes) OVER ({_NEWEST} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total"
         " FROM inspector_entries) AS ring WHERE n > ? OR total > ?)")


class InspectorTx(Protocol):
    """The inspector half of a transaction (``proxy.store.tx.SqlTx`` implements it)."""

    def add_captures(self, rows: Sequence[Sequence[Any]], max_entries: int, max_bytes: int) -> int: ...
    def captures(self, limit: int, model: str | None = None, client_id: str | None = None,
                 status: tuple[int, int] | None = None, since: float | None = None,
                 docs: bool = False) -> list[dict]: ...
    def capture(self, entry_id: int) -> dict | None: ...
    def clear_captures(self) -> int: ...
    def capture_totals(self) -> dict: ...


class SqlInspector:
    def _run(self, statement: str, params: tuple | list = ()) -> Any: ...  # provided by SqlTx

    def add_captures(self, rows: Sequence[Sequence[Any]], max_entries: int, max_bytes: int) -> int:
        """Insert ``rows`` (ENTRY_COLUMNS) and trim the ring; how many old rows were dropped."""
        for row in rows:
            self._run(_INSERT, tuple(row))
        cur = self._run(_TRIM, (max_entries, max_bytes))
        return max(cur.rowcount, 0)

    def captures(self, limit: int, model: str | None = None, client_id: str | None = None,
                 status: tuple[int, int] | None = None, since: float | None = None,
                 docs: bool = False) -> list[dict]:
        """Newest first; ``status`` is an inclusive range."""
        where: list[str] = []
        params: list[Any] = []
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if client_id is not None:
            where.append("client_id = ?")
            params.append(client_id)
        if status is not None:
            where.append("status BETWEEN ? AND ?")
            params += list(status)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        cols = SUMMARY_COLUMNS + (("doc",) if docs else ())
        sql = f"SELECT {', '.join(cols)} FROM inspector_entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {_NEWEST} LIMIT ?"
        rows = self._run(sql, params + [limit]).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def capture(self, entry_id: int) -> dict | None:
        cols = SUMMARY_COLUMNS + ("doc",)
        row = self._run(f"SELECT {', '.join(cols)} FROM inspector_entries WHERE id = ?",
                        (entry_id,)).fetchone()
        return dict(zip(cols, row, strict=True)) if row else None

    def clear_captures(self) -> int:
        return max(self._run("DELETE FROM inspector_entries").rowcount, 0)

    def capture_totals(self) -> dict:
        n, size = self._run("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM inspector_entries").fetchone()
        return {"entries": int(n), "bytes": int(size)}
