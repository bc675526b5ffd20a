"""Portable SQL for the model catalog (part of ``SqlTx``): entries per source, per-source fetch state
(ETag, Last-Modified, last error), and the one-row state (version, refresh claim, next due time).

A source's rows are replaced only by a refresh that succeeded; a failure touches its state row only.
Replacing a source's rows bumps ``catalog_state.version``, which workers poll to reload their merged view.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

SOURCE_COLUMNS = ("source", "url", "etag", "last_modified", "entries", "fetched_at", "ok_at", "changed_at",
                  "error")


class CatalogTx(Protocol):
    """The catalog half of a transaction (``SqlCatalog`` is the portable implementation)."""

    def catalog_version(self) -> int: ...
    def catalog_rows(self) -> list[tuple[str, str]]: ...
    def catalog_sources(self) -> list[dict]: ...
    def replace_catalog(self, source: str, rows: Sequence[tuple[str, str, bool, str]], *, url: str,
                        etag: str | None, last_modified: str | None, now: float) -> None: ...
    def note_catalog_fetch(self, source: str, now: float, error: str | None) -> None: ...
    def claim_catalog_refresh(self, owner: str, now: float, lease_s: float, force: bool) -> bool: ...
    def release_catalog_refresh(self, owner: str, next_due: float | None) -> None: ...


class SqlCatalog:
    """``CatalogTx`` in SQL that SQLite and PostgreSQL both accept (``SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def catalog_version(self) -> int:
        row = self._run("SELECT version FROM catalog_state WHERE id=1").fetchone()
        return int(row[0]) if row else 0

    def catalog_rows(self) -> list[tuple[str, str]]:
        """(source, entry JSON) for every stored entry."""
        return [(r[0], r[1]) for r in self._run("SELECT source, data FROM catalog_entries"
                                                " ORDER BY source, provider, model")]

    def catalog_sources(self) -> list[dict]:
        cur = self._run(f"SELECT {', '.join(SOURCE_COLUMNS)} FROM catalog_sources ORDER BY source")
        return [dict(zip(SOURCE_COLUMNS, r, strict=True)) for r in cur]

    def replace_catalog(self, source: str, rows: Sequence[tuple[str, str, bool, str]], *, url: str,
                        etag: str | None, last_modified: str | None, now: float) -> None:
        """The source's entries become ``rows`` (provider, model, free, JSON); its state says so."""
        self._run("DELETE FROM catalog_entries WHERE source=?", (source,))
        for provider, model, free, data in rows:
            self._run("INSERT INTO catalog_entries(source, provider, model, free, data)"
                      " VALUES (?, ?, ?, ?, ?) ON CONFLICT(source, provider, model)"
                      " DO UPDATE SET free=excluded.free, data=excluded.data",
                      (source, provider, model, 1 if free else 0, data))
        self._run("INSERT INTO catalog_sources(source, url, etag, last_modified, entries, fetched_at, ok_at,"
                  " changed_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
                  " ON CONFLICT(source) DO UPDATE SET url=excluded.url, etag=excluded.etag,"
                  " last_modified=excluded.last_modified, entries=excluded.entries,"
                  " fetched_at=excluded.fetched_at, ok_at=excluded.ok_at, changed_at=excluded.changed_at,"
                  " error=NULL", (source, url, etag, last_modified, len(rows), now, now, now))
        self._run("UPDATE catalog_state SET version=version+1 WHERE id=1")

    def note_catalog_fetch(self, source: str, now: float, error: str | None) -> None:
        """An attempt that changed no row: a 304 (``error`` None) or a failure (the rows stay)."""
        self._run("INSERT INTO catalog_sources(source, fetched_at, ok_at, error) VALUES (?, ?, ?, ?)"
                  " ON CONFLICT(source) DO UPDATE SET fetched_at=excluded.fetched_at,"
                  " ok_at=COALESCE(excluded.ok_at, catalog_sources.ok_at), error=excluded.error",
                  (source, now, None if error else now, error))

    def claim_catalog_refresh(self, owner: str, now: float, lease_s: float, force: bool) -> bool:
        """Become the one refresher until ``now + lease_s``: only when nobody holds a live claim and the
        refresh is due (or ``force``). True when this caller got it."""
        cur = self._run("UPDATE catalog_state SET claim_owner=?, claim_until=? WHERE id=1 AND claim_until<?"
                        " AND (next_due<=? OR ?)", (owner, now + lease_s, now, now, 1 if force else 0))
        return cur.rowcount == 1

    def release_catalog_refresh(self, owner: str, next_due: float | None) -> None:
        self._run("UPDATE catalog_state SET claim_owner=NULL, claim_until=0,"
                  " next_due=COALESCE(?, next_due) WHERE id=1 AND claim_owner=?", (next_due, owner))
