"""Portable SQL for client limits (part of ``KeyTx``): one ``limiter_state`` row per scope holding the
rpm counts per second, the tpm bucket, the in-flight counts per lease generation and (the client's row)
the spend of the current day, week and month. The algorithms, and the meaning of the columns, are in
``proxy.clients.limits``; this module only reads and writes rows: an admission or a settlement reads its
scopes' rows in one statement and writes each changed one back in one more."""
from __future__ import annotations

from typing import Any, Protocol

PERIOD_KINDS = ("day", "week", "month")
COLUMNS = ("scope", "hits_n", "hits", "level", "at", "charged", "reserved", "flight_at", "flight", "spend",
           "holds")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM limiter_state"
_INSERT = (f"INSERT INTO limiter_state({', '.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})")
_UPDATE = f"UPDATE limiter_state SET {', '.join(c + '=?' for c in COLUMNS[1:])} WHERE scope=?"


class Spend:
    """One period's spend in a ``limiter_state`` row; ``start`` None: nothing spent since the row began."""

    __slots__ = ("start", "requests", "tokens", "cost", "unpriced")

    def __init__(self, start: float | None = None, requests: int = 0, tokens: int = 0, cost: float = 0.0,
                 unpriced: int = 0) -> None:
        self.start, self.requests, self.tokens = start, requests, tokens
        self.cost, self.unpriced = cost, unpriced

    def at(self, start: float) -> Spend:
        """This spend if it is the period beginning at ``start``, else an empty one (a new period)."""
        return self if self.start == start else Spend(start)

    def dump(self, period: str) -> str:
        return f"{period}:{self.start!r}:{self.requests}:{self.tokens}:{self.cost!r}:{self.unpriced}"

    def view(self) -> dict:
        return {"requests": self.requests, "tokens": self.tokens, "cost_usd": self.cost,
                "unpriced": self.unpriced}


class LimitRow:
    """One ``limiter_state`` row, mutable: read, changed by the limiter, written back. ``hits``: the rpm
    window's admissions per second (``"<last admission>:<count>,…"``), ``hits_n`` their sum; ``flight``:
    in-flight counts per lease generation from ``flight_at`` on, as text ("3,0,5"); ``level``
    None: no token bucket yet (a full one); ``spend()`` by period kind, stored as text
    ``day:<start>:<requests>:<tokens>:<cost>:<unpriced>|week:…|month:…`` (one column, not fifteen: a
    row's cost grows with its columns) and parsed only when asked for (a client without a budget or a
    quota has none). ``holds``: budget headroom held by workers' slices, ``"<until>:<usd>,…"``."""

    __slots__ = ("scope", "hits_n", "hits", "level", "at", "charged", "reserved", "flight_at", "flight",
                 "_spend_text", "_spend", "holds", "exists")

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.hits_n, self.hits = 0, ""
        self.level: float | None = None
        self.at, self.charged, self.reserved = 0.0, 0, 0
        self.flight_at, self.flight = 0, ""
        self._spend_text = ""
        self._spend: dict[str, Spend] | None = None
        self.holds = ""
        self.exists = False  # read from the table (an UPDATE writes it back) or new (an INSERT)

    @classmethod
    def load(cls, r: Any) -> LimitRow:
        row = cls.__new__(cls)
        row.scope, row.hits_n, row.hits = r[0], int(r[1]), r[2]
        row.level = None if r[3] is None else float(r[3])
        row.at, row.charged, row.reserved = float(r[4]), int(r[5]), int(r[6])
        row.flight_at, row.flight = int(r[7]), r[8]
        row._spend_text, row._spend, row.holds, row.exists = r[9], None, r[10], True
        return row

    def held(self, now: float) -> float:
        """The budget headroom held by live holds (lapsed ones are dropped)."""
        if not self.holds:
            return 0.0
        live = [(u, usd) for u, usd in (h.split(":") for h in self.holds.split(",")) if float(u) > now]
        self.holds = ",".join(f"{u}:{usd}" for u, usd in live)
        return sum(float(usd) for _, usd in live)

    def hold(self, until: float, usd: float) -> str:
        """Add a hold; its text, to take it back with ``release``."""
        entry = f"{until!r}:{usd!r}"
        self.holds = f"{self.holds},{entry}" if self.holds else entry
        return entry

    def release(self, entry: str) -> None:
        parts = self.holds.split(",") if self.holds else []
        if entry in parts:
            parts.remove(entry)
            self.holds = ",".join(parts)

    def spent(self, period: str) -> Spend:
        """The spend of one period kind, read only (the admission's budget check)."""
        return self.spend()[period]

    def spend(self) -> dict[str, Spend]:
        """The spend by period kind, to change (parsed on first use, once per batch: ``LimitBatch``;
        changes are written back)."""
        if self._spend is None:
            self._spend = {p: Spend() for p in PERIOD_KINDS}
            if self._spend_text:
                for part in self._spend_text.split("|"):
                    p, start, req, tok, cost, unp = part.split(":")
                    self._spend[p] = Spend(float(start), int(req), int(tok), float(cost), int(unp))
        return self._spend

    def values(self) -> list:
        spend = self._spend_text if self._spend is None else \
            "|".join(s.dump(p) for p, s in self._spend.items() if s.start is not None)
        return [self.hits_n, self.hits, self.level, self.at, self.charged, self.reserved, self.flight_at,
                self.flight, spend, self.holds]


class LimitTx(Protocol):
    """The limit half of a transaction (``SqlLimits`` is the portable implementation)."""

    def limit_rows(self, scopes: list[str]) -> dict[str, LimitRow]: ...
    def put_limit_row(self, row: LimitRow) -> None: ...
    def bucket(self, scope: str) -> tuple[float, float, int, int] | None: ...
    def spend(self, client_id: str, period: str, start: float) -> dict: ...


class LimitBatch:
    """The ``LimitTx`` that the operations of one group-commit transaction share
    (``GroupCommit(store, batch=LimitBatch)``): each row is read once, changed in place by every
    operation after the other (each sees those before it, as in the database) and written once by
    ``flush`` before the commit. A batch of ten admissions and settlements of one client is one SELECT
    and one UPDATE instead of twenty statements, and its spend text is parsed and written once."""

    __slots__ = ("tx", "rows", "dirty")

    def __init__(self, tx: Any) -> None:
        self.tx = tx
        self.rows: dict[str, LimitRow | None] = {}  # None: no such row (yet)
        self.dirty: dict[str, LimitRow] = {}

    def limit_rows(self, scopes: list[str]) -> dict[str, LimitRow]:
        missing = [s for s in scopes if s not in self.rows]
        if missing:
            found = self.tx.limit_rows(missing)
            for s in missing:
                self.rows[s] = found.get(s)
        return {s: row for s in scopes if (row := self.rows[s]) is not None}

    def put_limit_row(self, row: LimitRow) -> None:
        self.rows[row.scope] = self.dirty[row.scope] = row

    def bucket(self, scope: str) -> tuple[float, float, int, int] | None:
        row = self.limit_rows([scope]).get(scope)
        return None if row is None or row.level is None else (row.level, row.at, row.charged, row.reserved)

    def spend(self, client_id: str, period: str, start: float) -> dict:
        row = self.limit_rows([client_id]).get(client_id)
        return (row.spent(period) if row is not None else Spend()).at(start).view()

    def flush(self) -> None:
        for row in self.dirty.values():
            self.tx.put_limit_row(row)
        self.dirty.clear()


class SqlLimits:
    """``LimitTx`` in SQL that SQLite and PostgreSQL both accept (``SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def limit_rows(self, scopes: list[str]) -> dict[str, LimitRow]:
        """The rows of ``scopes`` that exist (a primary-key lookup each, in one statement)."""
        if len(scopes) == 1:
            rows = self._run(_SELECT + " WHERE scope=?", scopes).fetchall()
        else:
            rows = self._run(_SELECT + f" WHERE scope IN ({','.join('?' * len(scopes))})", scopes).fetchall()
        return {r[0]: LimitRow.load(r) for r in rows}

    def put_limit_row(self, row: LimitRow) -> None:
        """Write ``row`` back: an UPDATE by primary key when it was read, else an INSERT (no other
        transaction can have created it meanwhile: the caller holds the write lock)."""
        if row.exists:
            self._run(_UPDATE, (*row.values(), row.scope))
        else:
            self._run(_INSERT, (row.scope, *row.values()))
            row.exists = True

    def bucket(self, scope: str) -> tuple[float, float, int, int] | None:
        """(level, at, charged, reserved) of the scope's token bucket; None when it has none yet."""
        row = self.limit_rows([scope]).get(scope)
        if row is None or row.level is None:
            return None
        return row.level, row.at, row.charged, row.reserved

    def spend(self, client_id: str, period: str, start: float) -> dict:
        """The spend of ``client_id`` in the ``period`` (day / week / month) beginning at ``start``."""
        row = self.limit_rows([client_id]).get(client_id)
        return (row.spent(period) if row is not None else Spend()).at(start).view()
