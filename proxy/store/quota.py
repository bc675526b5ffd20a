"""Portable SQL for quota pacing (part of ``KeyTx``): learned limits, the sliding-minute log and the day
counters of each (scope, model). The arithmetic is in ``proxy.keys.quota``; each method is a few short
statements run inside the caller's transaction, so an admission is exact across workers."""
from __future__ import annotations

from typing import Any, Protocol


class QuotaTx(Protocol):
    def quota_limits(self) -> list[dict]: ...
    def put_quota_limit(self, scope: str, model: str, kind: str, value: int, source: str,
                        at: float) -> bool: ...
    def quota_usage(self, scope: str, model: str, since: float, day: float,
                    forget: bool = True) -> tuple[int, int, float | None, int, int]: ...
    def quota_models(self, scope: str, day: float) -> list[str]: ...
    def add_quota_use(self, scope: str, model: str, at: float, day: float | None, requests: int,
                      tokens: int) -> None: ...
    def raise_quota_day(self, scope: str, model: str, day: float, requests: int, tokens: int) -> None: ...
    def refund_quota_day(self, scope: str, model: str, day: float, requests: int) -> None: ...
    def purge_quota(self, before_day: float) -> None: ...


class SqlQuota:
    """``QuotaTx`` in SQL that SQLite and PostgreSQL both accept (``SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def quota_limits(self) -> list[dict]:
        rows = self._run("SELECT scope, model, kind, value, source, learned_at FROM quota_limits").fetchall()
        return [{"scope": r[0], "model": r[1], "kind": r[2], "value": int(r[3]), "source": r[4],
                 "learned_at": float(r[5])} for r in rows]

    def put_quota_limit(self, scope: str, model: str, kind: str, value: int, source: str,
                        at: float) -> bool:
        """Store a learned limit; a different value (or source) replaces the old one. True when changed."""
        row = self._run("SELECT value, source FROM quota_limits WHERE scope=? AND model=? AND kind=?",
                        (scope, model, kind)).fetchone()
        if row is not None and int(row[0]) == value and row[1] == source:
            return False
        self._run("INSERT INTO quota_limits(scope, model, kind, value, source, learned_at)"
                  " VALUES (?,?,?,?,?,?) ON CONFLICT(scope, model, kind) DO UPDATE SET value=excluded.value,"
                  " source=excluded.source, learned_at=excluded.learned_at",
                  (scope, model, kind, value, source, at))
        return True

    def quota_usage(self, scope: str, model: str, since: float, day: float,
                    forget: bool = True) -> tuple[int, int, float | None, int, int]:
        """(minute requests, minute tokens, the oldest minute entry's time, day requests, day tokens).
        ``forget``: first drop the minute entries at or before ``since`` (a write; else a pure read)."""
        params: tuple
        if forget:
            gone = self._run("SELECT COUNT(*), SUM(requests), SUM(tokens) FROM quota_hits"
                             " WHERE scope=? AND model=? AND at<=?", (scope, model, since)).fetchone()
            if gone[0]:
                self._run("DELETE FROM quota_hits WHERE scope=? AND model=? AND at<=?", (scope, model, since))
                self._run("UPDATE quota_minute SET requests=requests-?, tokens=tokens-?"
                          " WHERE scope=? AND model=?", (int(gone[1] or 0), int(gone[2] or 0), scope, model))
            minute = ("(SELECT requests FROM quota_minute WHERE scope=? AND model=?),"
                      " (SELECT tokens FROM quota_minute WHERE scope=? AND model=?),")
            params = (scope, model, scope, model)
        else:
            minute = ("(SELECT SUM(requests) FROM quota_hits WHERE scope=? AND model=? AND at>?),"
                      " (SELECT SUM(tokens) FROM quota_hits WHERE scope=? AND model=? AND at>?),")
            params = (scope, model, since, scope, model, since)
        row = self._run(
            "SELECT " + minute +
            " (SELECT MIN(at) FROM quota_hits WHERE scope=? AND model=? AND at>?),"
            " (SELECT requests FROM quota_day WHERE scope=? AND model=? AND day=?),"
            " (SELECT tokens FROM quota_day WHERE scope=? AND model=? AND day=?)",
            (*params, scope, model, since, scope, model, day, scope, model, day)).fetchone()
        return (int(row[0] or 0), int(row[1] or 0), None if row[2] is None else float(row[2]),
                int(row[3] or 0), int(row[4] or 0))

    def quota_models(self, scope: str, day: float) -> list[str]:
        """Models with usage counted for ``scope`` in the day window ``day``."""
        rows = self._run("SELECT model FROM quota_day WHERE scope=? AND day=?", (scope, day)).fetchall()
        return [r[0] for r in rows]

    def add_quota_use(self, scope: str, model: str, at: float, day: float | None, requests: int,
                      tokens: int) -> None:
        """Count ``requests`` and ``tokens`` in the sliding minute (at ``at``) and, unless ``day`` is
        None, in the day window ``day``."""
        self._run("INSERT INTO quota_hits(scope, model, at, requests, tokens) VALUES (?,?,?,?,?)",
                  (scope, model, at, requests, tokens))
        self._run("INSERT INTO quota_minute(scope, model, requests, tokens) VALUES (?,?,?,?)"
                  " ON CONFLICT(scope, model) DO UPDATE SET requests=quota_minute.requests+excluded.requests,"
                  " tokens=quota_minute.tokens+excluded.tokens", (scope, model, requests, tokens))
        if day is not None:
            self._run("INSERT INTO quota_day(scope, model, day, requests, tokens) VALUES (?,?,?,?,?)"
                      " ON CONFLICT(scope, model, day) DO UPDATE SET"
                      " requests=quota_day.requests+excluded.requests,"
                      " tokens=quota_day.tokens+excluded.tokens", (scope, model, day, requests, tokens))

    def raise_quota_day(self, scope: str, model: str, day: float, requests: int, tokens: int) -> None:
        """The day's usage is at least ``requests`` / ``tokens`` (what an upstream said was spent)."""
        self._run("INSERT INTO quota_day(scope, model, day, requests, tokens) VALUES (?,?,?,?,?)"
                  " ON CONFLICT(scope, model, day) DO UPDATE SET"
                  " requests=CASE WHEN excluded.requests > quota_day.requests THEN excluded.requests"
                  " ELSE quota_day.requests END,"
                  " tokens=CASE WHEN excluded.tokens > quota_day.tokens THEN excluded.tokens"
                  " ELSE quota_day.tokens END", (scope, model, day, requests, tokens))

    def refund_quota_day(self, scope: str, model: str, day: float, requests: int) -> None:
        """Give back requests reserved in the day window and never sent."""
        self._run("UPDATE quota_day SET requests=CASE WHEN requests > ? THEN requests-? ELSE 0 END"
                  " WHERE scope=? AND model=? AND day=?", (requests, requests, scope, model, day))

    def purge_quota(self, before_day: float) -> None:
        self._run("DELETE FROM quota_day WHERE day<?", (before_day,))
