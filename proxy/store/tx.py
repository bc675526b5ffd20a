"""``SqlTx``: the portable ``KeyTx`` over any DB-API connection that is already inside a transaction."""
from __future__ import annotations

from typing import Any

from .audit import SqlAudit
from .clients import SqlClients
from .inspector import SqlInspector
from .keys import SqlKeys
from .limits import SqlLimits
from .usage import SqlUsage


class SqlTx(SqlKeys, SqlAudit, SqlClients, SqlLimits, SqlUsage, SqlInspector):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def sql(self, statement: str) -> str:
        """Hook for drivers whose placeholder style is not ``?`` (psycopg: ``%s``)."""
        return statement

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        return self._conn.execute(self.sql(statement), tuple(params))
