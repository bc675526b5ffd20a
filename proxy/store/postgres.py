"""The PostgreSQL ``KeyStore``: several keyrelay instances on one server, with SQLite's semantics.

- **Write transactions are serialized** by one transaction-scoped advisory lock, as SQLite's single
  writer serializes them: the read-check-write steps of a limit admission or a state transition are
  exact across every worker of every instance, and with one lock there is no lock order to get wrong,
  so batches never deadlock. The wait is bounded by ``lock_timeout`` (→ ``StoreUnavailable``) and is a
  socket read, so it never freezes a gevent worker. Reads (``snapshot``) take no lock (MVCC).
- **Change propagation**: a write transaction that touched a table some worker holds a view of (keys,
  cooldowns, clients, runtime keys, learned limits, catalog...) sends ``NOTIFY keyrelay_changes`` as it
  commits; every process LISTENs on its own connection and bumps ``change_token``, which the key pool
  and the client-key cache compare on every request (µs, no query). The token also turns over every
  ``BACKSTOP_S`` seconds, so a lost notification is at worst that late.
- **Connections**: a small pool per worker (``server.database_pool_size``), plus the listener's one.
  When the server is unreachable every call fails fast with ``StoreUnavailable`` (callers keep their
  last view and buffer what they must write) and the pool reconnects when it is back.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .base import StoreUnavailable, StoreUnreachable
from .pg_conn import PgConnection, PgTarget, PgUnavailable, parse_url
from .tx import SqlTx

log = logging.getLogger("keyrelay.store")

CHANNEL = "keyrelay_changes"
WRITE_LOCK = 0x6B72_7772  # "krwr": the advisory lock every write transaction holds
BACKSTOP_S = 5.0
_RETRY_CONNECT_S = 0.5  # after a failed connect, calls fail at once for this long (no connect storm)
# Written on every request or by background jobs, and part of no cached view: no NOTIFY for these.
QUIET_TABLES = frozenset({
    "limiter_state", "client_spend",
    "usage_records", "usage_daily", "inspector_entries", "cache_entries", "cache_totals", "stored_responses",
    "key_history", "key_periods", "quota_hits", "quota_minute", "quota_day", "audit", "job_claims",
})
_WRITE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


class PgTx(SqlTx):
    """``SqlTx`` that notes whether a statement wrote a table other processes keep a view of."""

    def __init__(self, conn: PgConnection) -> None:
        super().__init__(conn)
        self.notify = False

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        if not self.notify:
            m = _WRITE.match(statement)
            if m and m.group(1).lower() not in QUIET_TABLES:
                self.notify = True
        return self._conn.execute(statement, params)


class PostgresStore:
    """``KeyStore`` on a PostgreSQL database; safe to share between the greenlets of one process."""

    def __init__(self, url: str, *, lock_wait_s: float = 2.0, pool_size: int = 4,
                 migrate: bool = True, listen: bool = True, backstop_s: float = BACKSTOP_S) -> None:
        self.url = url
        self.target: PgTarget = parse_url(url)
        self.backstop_s = backstop_s
        self.lock_wait_s = lock_wait_s
        self.pool_size = max(1, pool_size)
        self._io_timeout_s = max(5.0, lock_wait_s + 3.0)
        self._idle: list[PgConnection] = []
        self._open = 0
        self._cond = threading.Condition()
        self._down_until = 0.0
        self._down_reason = ""
        self._closed = False
        self._notified = 0
        self._listen = listen
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        if migrate:
            from . import pg_schema

            conn = self._connect(time.monotonic() + max(lock_wait_s, 5.0))
            try:
                pg_schema.migrate(conn)
            finally:
                conn.close()

    # -- connections ---------------------------------------------------------------------------------
    def _connect(self, deadline: float) -> PgConnection:
        now = time.monotonic()
        if now < self._down_until:
            raise StoreUnreachable(self._down_reason)
        try:
            conn = PgConnection(self.target, timeout_s=max(0.2, min(self._io_timeout_s, deadline - now)))
        except PgUnavailable as exc:
            self._down_reason = f"database unreachable: {exc}"
            self._down_until = time.monotonic() + _RETRY_CONNECT_S
            raise StoreUnreachable(self._down_reason) from None
        # the caller's deadline bounds the connect only: the pooled connection serves later calls with
        # longer waits (a transaction(timeout=5), a slow report), so its socket gets the I/O timeout
        sock = getattr(conn._c, "_usock", None)
        if sock is not None:
            sock.settimeout(self._io_timeout_s)
        return conn

    def _checkout(self, deadline: float) -> PgConnection:
        with self._cond:
            while True:
                if self._closed:
                    raise StoreUnavailable("store closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self.pool_size:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(f"all {self.pool_size} database connections of this worker busy")
                self._cond.wait(left)
        try:
            return self._connect(deadline)
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _checkin(self, conn: PgConnection) -> None:
        stale: list[PgConnection] = []
        with self._cond:
            if conn.broken or self._closed:
                self._open -= 1
                conn.close()
                if conn.broken:  # the server dropped one: the idle ones are likely from before too
                    stale, self._idle = self._idle, []
                    self._open -= len(stale)
            else:
                self._idle.append(conn)
            self._cond.notify_all()
        for c in stale:
            c.close()

    # -- transactions -----------------------------------------------------------------------------
    def _begin(self, deadline: float, write: bool) -> PgConnection:
        """A pooled connection inside a new transaction (a write one holding the write lock). A pooled
        connection the server dropped (it restarted) is replaced once."""
        for attempt in (1, 2):
            conn = self._checkout(deadline)
            try:
                if write:  # one round trip. synchronous_commit off: a commit does not wait for its WAL
                    # flush (~ms), as SQLite's WAL with synchronous=NORMAL; a server crash may lose the
                    # last commits, never consistency
                    sql = "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL synchronous_commit = off;"
                    wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
                    conn.execute(sql.format(wait_ms) + f" SELECT pg_advisory_xact_lock({WRITE_LOCK})")
                else:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return conn
            except PgUnavailable as exc:
                _rollback(conn)
                self._checkin(conn)
                if not conn.broken or attempt == 2:
                    raise _unavailable(conn, exc, "database not writable: " if write else "") from None
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[PgTx]:
        conn = self._begin(time.monotonic() + (self.lock_wait_s if timeout is None else timeout), write=True)
        tx = PgTx(conn)
        try:
            yield tx
            if tx.notify:
                conn.execute(f"NOTIFY {CHANNEL}")
            conn.execute("COMMIT")
        except PgUnavailable as exc:
            _rollback(conn)
            raise _unavailable(conn, exc) from None
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._checkin(conn)

    @contextmanager
    def snapshot(self) -> Iterator[PgTx]:
        conn = self._begin(time.monotonic() + self.lock_wait_s, write=False)
        try:
            yield PgTx(conn)
        except PgUnavailable as exc:
            raise _unavailable(conn, exc) from None
        finally:
            _rollback(conn)
            self._checkin(conn)

    def change_token(self) -> int:
        """Without ``start_listening()`` (a CLI command, ``create_app`` before the worker serves) only
        the backstop turns it."""
        return self._notified * 1_000_003 + int(time.monotonic() // self.backstop_s)

    def check_writable(self, timeout: float) -> str | None:
        try:
            with self.transaction(timeout=timeout):
                pass
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    # -- LISTEN ----------------------------------------------------------------------------------
    def start_listening(self, wait_s: float = 1.0) -> None:
        """Start the LISTEN thread (once; ``Gateway.start_background``) and wait until it listens, so the
        changes committed from now on are heard."""
        with self._cond:
            if self._listener is not None or not self._listen:
                return
            self._listener = threading.Thread(target=self._listen_loop, name="keyrelay-pg-listen",
                                              daemon=True)
        self._listener.start()
        self._listening.wait(wait_s)

    def _listen_loop(self) -> None:
        """Hold a LISTEN connection; bump the token on every notification, and after every reconnect
        (what was missed meanwhile is re-read)."""
        while not self._stop.is_set():
            try:
                conn = PgConnection(self.target, timeout_s=self._io_timeout_s,
                                    application_name="keyrelay-listen")
            except PgUnavailable:
                self._stop.wait(_RETRY_CONNECT_S)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                if self._listening.is_set():  # a reconnect: re-read what may have been missed
                    self._notified += 1
                self._listening.set()
                while not self._stop.is_set():
                    _wait_readable(conn, 0.25)
                    conn.execute("SELECT 1")  # reads whatever notifications arrived
                    if conn.notifications:
                        conn.notifications.clear()
                        self._notified += 1
            except (PgUnavailable, Exception) as exc:  # the server went away: reconnect
                log.debug("database listener reconnecting: %s", exc)
                self._notified += 1
                self._stop.wait(_RETRY_CONNECT_S)
            finally:
                conn.close()


def _wait_readable(conn: PgConnection, timeout: float) -> None:
    """Sleep until the server sends something (a notification) or ``timeout`` passes; cooperative under
    gevent (``select`` is patched)."""
    import select

    sock = getattr(conn._c, "_usock", None)
    if sock is None:
        time.sleep(timeout)
        return
    try:
        select.select([sock], [], [], timeout)
    except (OSError, ValueError):
        time.sleep(timeout)


def _unavailable(conn: PgConnection, exc: PgUnavailable, prefix: str = "") -> StoreUnavailable:
    """A lost connection is the server gone (unreachable); anything else a busy one."""
    if conn.broken:
        return StoreUnreachable(f"database unreachable: {exc}")
    return StoreUnavailable(f"{prefix}{exc}")


def _rollback(conn: PgConnection) -> None:
    if conn.broken:
        return
    try:
        conn.execute("ROLLBACK")
    except Exception:
        conn.broken = True


def readiness(url: str, *, write_timeout_s: float = 0.25) -> str | None:
    """None when the database answers, is fully migrated and a write transaction can start within
    ``write_timeout_s``, else the reason (the URL's password never in it). Its own connection."""
    from . import pg_schema

    try:
        target = parse_url(url)
        conn = PgConnection(target, timeout_s=max(0.5, write_timeout_s * 4),
                            application_name="keyrelay-ready")
    except (ValueError, PgUnavailable) as exc:
        return f"database unreachable: {exc}"
    try:
        problem = pg_schema.check_ready(conn)
        if problem:
            return problem
        conn.execute("BEGIN")
        conn.execute(f"SET LOCAL lock_timeout = {max(1, int(write_timeout_s * 1000))}")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
        conn.execute("ROLLBACK")
        return None
    except PgUnavailable as exc:
        return f"database not writable: {exc}"
    finally:
        conn.close()
