"""One PostgreSQL connection (pg8000, pure Python) behind the small DB-API subset ``SqlTx`` uses.

pg8000 speaks the wire protocol over Python sockets, so under gevent's monkey patching every wait for
the server (a lock, a slow statement, a dead host) yields to the worker's other greenlets instead of
freezing them. Statements keep SQLite's ``?`` placeholders; each distinct statement is prepared once
per connection (one round trip per execution afterwards, not pg8000's three for an unnamed one).
Values come back as plain Python: ``numeric`` (what ``SUM`` of a BIGINT gives) as int or float.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
from pg8000.core import make_params
from pg8000.dbapi import convert_paramstyle
from pg8000.exceptions import DatabaseError as PgServerError
from pg8000.exceptions import InterfaceError

MAX_PREPARED = 512  # prepared statements kept per connection (IN-lists of every length are not kept)
# SQLSTATEs that mean "try again later", not "this statement is wrong"
_TRANSIENT = {"55P03", "57014", "40001", "40P01", "53300", "57P01", "57P02", "57P03", "08000", "08003",
              "08006"}


class PgUnavailable(Exception):
    """The server cannot be reached or refused for a transient reason (lock wait, shutdown, too many
    connections); the message names it without the URL's password."""


@dataclass(frozen=True)
class PgTarget:
    user: str
    password: str | None
    host: str
    port: int
    database: str

    @property
    def display(self) -> str:
        """The URL without its password (for logs, errors and /readyz)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def is_postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def parse_url(url: str) -> PgTarget:
    """``postgresql://user[:password]@host[:port]/database``; ValueError (without the password) if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected postgresql://user:password@host:port/database")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ValueError("the PostgreSQL URL has an invalid port") from None
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not parts.username or not database:
        raise ValueError("a PostgreSQL URL needs a user, a host and a database: "
                         "postgresql://user:password@host:port/database")
    return PgTarget(unquote(parts.username), unquote(parts.password) if parts.password else None,
                    parts.hostname, port, database)


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


class Result:
    """The rows of one statement (already read) and how many rows it changed."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list | None, rowcount: int) -> None:
        self.rows = [tuple(_plain(v) for v in r) for r in rows] if rows else []
        self.rowcount = rowcount

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)


class PgConnection:
    """``execute(sql, params)`` with ``?`` placeholders, returning a ``Result``; errors become
    ``PgUnavailable`` (transient) or pg8000's ``DatabaseError`` (the statement is wrong)."""

    def __init__(self, target: PgTarget, *, timeout_s: float, application_name: str = "keyrelay") -> None:
        self.target = target
        try:
            self._c = pg8000.native.Connection(
                target.user, host=target.host, port=target.port, database=target.database,
                password=target.password, timeout=timeout_s, application_name=application_name)
        except (InterfaceError, OSError, PgServerError) as exc:
            raise PgUnavailable(f"cannot connect to {target.display}: {_reason(exc)}") from None
        self._prepared: dict[str, tuple[bytes, Any, Any]] = {}
        self.broken = False

    @property
    def notifications(self) -> Any:
        return self._c.notifications

    def execute(self, sql: str, params: tuple | list = ()) -> Result:
        vals = tuple(int(v) if isinstance(v, bool) else v for v in params)
        try:
            if not vals:
                ctx = self._c.execute_simple(sql)
            else:
                ctx = self._run_prepared(sql, vals)
        except PgServerError as exc:
            if _sqlstate(exc) in _TRANSIENT:
                self.broken = _sqlstate(exc).startswith(("08", "57P"))
                if _sqlstate(exc) == "55P03":
                    raise PgUnavailable("database locked: the write lock was not free before the deadline") \
                        from None
                raise PgUnavailable(_reason(exc)) from None
            raise
        except (InterfaceError, OSError, AttributeError) as exc:  # OSError: timeouts too
            # AttributeError: pg8000 after its socket was closed under it
            self.broken = True
            raise PgUnavailable(f"connection to {self.target.display} lost: {_reason(exc)}") from None
        return Result(ctx.rows, ctx.row_count)

    def _run_prepared(self, sql: str, vals: tuple) -> Any:
        entry = self._prepared.get(sql)
        if entry is None:
            statement, _ = convert_paramstyle("qmark", sql, vals)
            if len(self._prepared) >= MAX_PREPARED:
                return self._c.execute_unnamed(statement, vals=vals)
            name, columns, input_funcs = self._c.prepare_statement(statement, ())
            entry = self._prepared[sql] = (name, columns, input_funcs)
        name, columns, input_funcs = entry
        return self._c.execute_named(name, make_params(self._c.py_types, vals), columns,
                                     input_funcs, sql)

    def close(self) -> None:
        try:
            self._c.close()
        except Exception:  # closing a dead connection: nothing to release
            pass


def _sqlstate(exc: PgServerError) -> str:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return str(info.get("C", ""))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PgServerError):
        info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        return f"{info.get('M', 'server error')} (SQLSTATE {info.get('C', '?')})"
    return str(exc) or type(exc).__name__
