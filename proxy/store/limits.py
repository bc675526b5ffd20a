"""Portable SQL for client limits (part of ``KeyTx``): the rpm window log, the tpm token buckets, the
concurrency leases and the per-period spend. The algorithms are in ``proxy.clients.limits``; every
method here is one or two short statements run inside the caller's transaction."""
from __future__ import annotations

from typing import Any, Protocol


class LimitTx(Protocol):
    """The limit half of a transaction (``SqlLimits`` is the portable implementation)."""

    def window(self, scope: str, since: float) -> tuple[int, float | None]: ...
    def add_hit(self, scope: str, at: float) -> None: ...
    def bucket(self, scope: str) -> tuple[float, float, int, int] | None: ...
    def put_bucket(self, scope: str, level: float, at: float, charged: int, reserved: int) -> None: ...
    def leases(self, scope: str, now: float) -> int: ...
    def add_lease(self, lid: str, scope: str, expires: float) -> None: ...
    def drop_lease(self, lid: str, scope: str, now: float) -> None: ...
    def spend(self, client_id: str, period: str, start: float) -> dict: ...
    def add_spend(self, client_id: str, periods: list[tuple[str, float, float]], requests: int,
                  tokens: int, cost_usd: float, unpriced: int) -> None: ...


class SqlLimits:
    """``LimitTx`` in SQL that SQLite and PostgreSQL both accept (``SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    # rpm: sliding-window log -------------------------------------------------------------------
    def window(self, scope: str, since: float) -> tuple[int, float | None]:
        """Forget the hits at or before ``since``; (hits left, the oldest one's time). Index seeks
        only (the count is kept in ``limit_windows``), so the cost does not grow with rpm."""
        deleted = self._run("DELETE FROM limit_hits WHERE scope=? AND at<=?", (scope, since)).rowcount
        if deleted and deleted > 0:
            self._run("UPDATE limit_windows SET n=n-? WHERE scope=?", (deleted, scope))
        n, oldest = self._run("SELECT (SELECT n FROM limit_windows WHERE scope=?),"
                              " (SELECT MIN(at) FROM limit_hits WHERE scope=?)", (scope, scope)).fetchone()
        return int(n or 0), oldest

    def add_hit(self, scope: str, at: float) -> None:
        self._run("INSERT INTO limit_hits(scope, at) VALUES (?,?)", (scope, at))
        self._run("INSERT INTO limit_windows(scope, n) VALUES (?, 1)"
                  " ON CONFLICT(scope) DO UPDATE SET n=limit_windows.n+1", (scope,))

    # tpm: token buckets ------------------------------------------------------------------------
    def bucket(self, scope: str) -> tuple[float, float, int, int] | None:
        """(level, at, charged, reserved) or None when the scope has no bucket yet (a full one)."""
        row = self._run("SELECT level, at, charged, reserved FROM limit_buckets WHERE scope=?",
                        (scope,)).fetchone()
        return None if row is None else (float(row[0]), float(row[1]), int(row[2]), int(row[3]))

    def put_bucket(self, scope: str, level: float, at: float, charged: int, reserved: int) -> None:
        self._run("INSERT INTO limit_buckets(scope, level, at, charged, reserved) VALUES (?,?,?,?,?)"
                  " ON CONFLICT(scope) DO UPDATE SET level=excluded.level, at=excluded.at,"
                  " charged=excluded.charged, reserved=excluded.reserved",
                  (scope, level, at, charged, reserved))

    # max_concurrent: leases --------------------------------------------------------------------
    def leases(self, scope: str, now: float) -> int:
        """The live leases of ``scope`` (expired ones do not count; ``drop_lease`` deletes them)."""
        return int(self._run("SELECT COUNT(*) FROM limit_leases WHERE scope=? AND expires>?",
                             (scope, now)).fetchone()[0])

    def add_lease(self, lid: str, scope: str, expires: float) -> None:
        self._run("INSERT INTO limit_leases(id, scope, expires) VALUES (?,?,?)", (lid, scope, expires))

    def drop_lease(self, lid: str, scope: str, now: float) -> None:
        """Release ``lid``, and forget the leases of ``scope`` that expired (a killed worker's)."""
        self._run("DELETE FROM limit_leases WHERE id=? OR (scope=? AND expires<=?)", (lid, scope, now))

    # budgets and quotas: spend per period -----------------------------------------------------
    def spend(self, client_id: str, period: str, start: float) -> dict:
        row = self._run("SELECT requests, tokens, cost_usd, unpriced FROM client_spend"
                        " WHERE client_id=? AND period=? AND period_start=?",
                        (client_id, period, start)).fetchone()
        r, t, c, u = tuple(row) if row is not None else (0, 0, 0.0, 0)
        return {"requests": int(r), "tokens": int(t), "cost_usd": float(c), "unpriced": int(u)}

    def add_spend(self, client_id: str, periods: list[tuple[str, float, float]], requests: int,
                  tokens: int, cost_usd: float, unpriced: int) -> None:
        """Add to the spend of every ``(period, start, end)`` in one statement."""
        values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(periods))
        params = [v for p, start, end in periods
                  for v in (client_id, p, start, end, requests, tokens, cost_usd, unpriced)]
        self._run("INSERT INTO client_spend(client_id, period, period_start, period_end, requests, tokens,"
                  f" cost_usd, unpriced) VALUES {values}"
                  " ON CONFLICT(client_id, period, period_start) DO UPDATE SET"
                  " requests=client_spend.requests+excluded.requests,"
                  " tokens=client_spend.tokens+excluded.tokens,"
                  " cost_usd=client_spend.cost_usd+excluded.cost_usd,"
                  " unpriced=client_spend.unpriced+excluded.unpriced", params)
