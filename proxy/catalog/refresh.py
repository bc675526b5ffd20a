"""Refreshing the stored catalog: one refresher at a time across workers and instances (a claim row in the
store), each source fetched conditionally (ETag / If-Modified-Since), its rows replaced only when the
download parsed into at least one entry. A failure keeps the last good copy and records why."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from proxy.catalog import fetch as fetching
from proxy.catalog.parse import Entry, detect, parse
from proxy.store.base import KeyStore
from proxy.store.catalog import CatalogTx

log = logging.getLogger("keyrelay")

CLAIM_LEASE_S = 300.0  # a refresher that died frees the claim after this
WRITE_TIMEOUT_S = 10.0  # waiting for the write lock to store a download (cooperative)


def rows(entries: list[Entry]) -> list[tuple[str, str, bool, str]]:
    return [(e.provider, e.model, e.free, orjson.dumps(e.to_json()).decode()) for e in entries]


def claim(store: KeyStore, owner: str, now: float, force: bool) -> bool:
    with store.transaction() as raw:
        return cast(CatalogTx, raw).claim_catalog_refresh(owner, now, CLAIM_LEASE_S, force)


def release(store: KeyStore, owner: str, next_due: float | None) -> None:
    with store.transaction(timeout=WRITE_TIMEOUT_S) as raw:
        cast(CatalogTx, raw).release_catalog_refresh(owner, next_due)


def sources(store: KeyStore) -> dict[str, dict]:
    with store.snapshot() as raw:
        return {s["source"]: s for s in cast(CatalogTx, raw).catalog_sources()}


def refresh_source(store: KeyStore, source: str, url: str, clock: Callable[[], float],
                   fetch: Callable[..., fetching.Fetched] = fetching.fetch) -> str:
    """Fetch one source and store what it said: ``ok``, ``not_modified`` or ``error`` (the rows stay)."""
    known = sources(store).get(source) or {}
    shown = fetching.safe_url(url)  # stored and shown: no credentials, no query
    same = known.get("url") == shown and known.get("entries")  # validators of another URL do not apply
    try:
        got = fetch(url, known.get("etag") if same else None, known.get("last_modified") if same else None)
        if got.not_modified:
            with store.transaction(timeout=WRITE_TIMEOUT_S) as raw:
                cast(CatalogTx, raw).note_catalog_fetch(source, clock(), None)
            return "not_modified"
        entries = parse(got.doc, source, updated=clock())
    except Exception as exc:  # FetchError, a format error, a locked database: keep the last good copy
        why = str(exc) if isinstance(exc, fetching.FetchError | ValueError) else type(exc).__name__
        log.warning("catalog refresh of %s failed, keeping the last good copy: %s", source, why,
                    extra={"event": "catalog_refresh_failed", "source": source})
        try:
            with store.transaction(timeout=WRITE_TIMEOUT_S) as raw:
                cast(CatalogTx, raw).note_catalog_fetch(source, clock(), why[:300])
        except Exception:
            pass
        return "error"
    stored = rows(entries)  # serialized before the write lock is taken
    with store.transaction(timeout=WRITE_TIMEOUT_S) as raw:
        cast(CatalogTx, raw).replace_catalog(source, stored, url=shown, etag=got.etag,
                                             last_modified=got.last_modified, now=clock())
    log.info("catalog %s refreshed: %d entries", source, len(entries),
             extra={"event": "catalog_refreshed", "source": source, "entries": len(entries)})
    return "ok"


def import_document(store: KeyStore, doc: Any, origin: str, now: float) -> tuple[str, int]:
    """Store a catalog document (either format) as its source's current copy: (source, entries)."""
    source = detect(doc)
    stored = rows(parse(doc, source, updated=now))
    with store.transaction(timeout=WRITE_TIMEOUT_S) as raw:
        cast(CatalogTx, raw).replace_catalog(source, stored, url=origin, etag=None,
                                             last_modified=None, now=now)
    return source, len(stored)


def read_file(path: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None


def import_file_if_newer(store: KeyStore, path: str, now: float) -> tuple[str, int] | None:
    """``catalog.file`` at start-up: imported unless its source's copy changed after the file did."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        log.warning("catalog.file %s unreadable: %s", path, exc.strerror or exc,
                    extra={"event": "catalog_file_error"})
        return None
    try:
        doc = read_file(path)
        source = detect(doc)
    except ValueError as exc:
        log.warning("catalog.file not imported: %s", exc, extra={"event": "catalog_file_error"})
        return None
    known = sources(store).get(source) or {}
    if known.get("entries") and (known.get("changed_at") or 0) >= mtime:
        return None
    return import_document(store, doc, f"file:{path}", now)

