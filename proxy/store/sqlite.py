"""The SQLite ``KeyStore``: one connection per process, WAL, and lock waits that never freeze a worker.

SQLite's own busy handler sleeps inside C, so under gevent a lock held by another process would stop
every greenlet of the worker for the whole busy timeout. This backend sets ``busy_timeout=0`` after
migrating and retries a busy call itself with ``time.sleep`` (gevent's cooperative sleep once
monkey-patched), so other requests keep running while one call waits for its deadline. In WAL mode
readers never wait for a writer, so the per-request ``PRAGMA data_version`` check stays a plain
~µs call with no thread hop and no retry loop on the happy path.

SQLite-specific SQL (PRAGMAs, ``BEGIN IMMEDIATE``) stays in this module and ``db.py``; the row
operations are the portable ``SqlTx``.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from . import db
from .base import StoreUnavailable
from .tx import SqlTx

T = TypeVar("T")

_FIRST_RETRY_S, _MAX_RETRY_S = 0.002, 0.05


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def retry_busy(fn: Callable[[], T], deadline: float, mutex: threading.RLock | None = None) -> T:
    """Call ``fn`` until it is not refused with SQLITE_BUSY or ``deadline`` (monotonic) passes.

    Waits with ``time.sleep`` outside ``mutex``; anything but "busy", or busy past the deadline,
    becomes StoreUnavailable."""
    delay = _FIRST_RETRY_S
    while True:
        try:
            if mutex is None:
                return fn()
            with mutex:
                return fn()
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not _busy(exc) or left <= 0:
                raise StoreUnavailable(str(exc)) from None
        time.sleep(min(delay, left))
        delay = min(delay * 2, _MAX_RETRY_S)


class SQLiteStore:
    """``KeyStore`` on one SQLite file; safe to share between the threads/greenlets of one process."""

    def __init__(self, path: str | Path, *, lock_wait_s: float = 2.0) -> None:
        self.path = str(path)
        self.lock_wait_s = lock_wait_s
        # migrations run at start-up, before any request: SQLite's own busy wait is fine there
        self._conn = db.connect(path, busy_timeout_ms=max(int(lock_wait_s * 1000), 1000))
        try:
            db.migrate(self._conn)
            self._conn.execute("PRAGMA busy_timeout=0")
        except BaseException:
            self._conn.close()
            raise
        self._mutex = threading.RLock()  # one statement / transaction at a time on the connection

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[SqlTx]:
        deadline = time.monotonic() + (self.lock_wait_s if timeout is None else timeout)
        conn = self._conn

        def begin() -> None:
            self._mutex.acquire()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._mutex.release()
                raise

        retry_busy(begin, deadline)
        try:  # the write lock is ours: the statements below do not wait
            yield SqlTx(conn)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            raise StoreUnavailable(str(exc)) from None
        except BaseException:
            self._rollback()
            raise
        finally:
            self._mutex.release()

    @contextmanager
    def snapshot(self) -> Iterator[SqlTx]:
        conn = self._conn
        deadline = time.monotonic() + self.lock_wait_s

        def begin() -> None:
            self._mutex.acquire()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT 1 FROM keys LIMIT 1").fetchall()  # takes the read snapshot now
            except BaseException:
                self._rollback()
                self._mutex.release()
                raise

        retry_busy(begin, deadline)
        try:
            yield SqlTx(conn)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None
        finally:
            self._rollback()
            self._mutex.release()

    def change_token(self) -> int:
        try:
            with self._mutex:
                return self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None

    def check_writable(self, timeout: float) -> str | None:
        try:
            with self.transaction(timeout=timeout):
                pass
        except StoreUnavailable as exc:
            return f"database not writable: {exc}"
        return None

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def readiness(path: str | Path, *, write_timeout_s: float = 0.25) -> str | None:
    """None when the database file is there, fully migrated and writable, else the reason.

    Opens its own connection (so a replaced or vanished file is noticed) with no busy timeout: the
    write check waits cooperatively, at most ``write_timeout_s``."""
    try:
        conn = db.connect(path, busy_timeout_ms=0, create=False)
    except db.DatabaseError as exc:  # missing, unreadable, not a database, directory is a file...
        return str(exc)
    try:
        problem = db.check_ready(conn)
        if problem:
            return problem

        def begin() -> None:
            conn.execute("BEGIN IMMEDIATE")

        try:
            retry_busy(begin, time.monotonic() + write_timeout_s)
        except StoreUnavailable as exc:
            return f"database not writable: {exc}"
        conn.execute("ROLLBACK")
        return None
    finally:
        conn.close()
