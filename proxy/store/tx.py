"""``SqlTx``: the portable ``KeyTx`` over any DB-API connection that is already inside a transaction."""
from __future__ import annotations

from typing import Any

from .audit import SqlAudit
from .cache import SqlCache
from .catalog import SqlCatalog
from .clients import SqlClients
from .history import SqlHistory
from .inspector import SqlInspector
from .jobs import SqlJobs
from .keys import SqlKeys
from .limits import SqlLimits
from .quota import SqlQuota
from .responses import SqlResponses
from .runtime_keys import SqlRuntimeKeys
from .usage import SqlUsage


class SqlTx(SqlKeys, SqlAudit, SqlClients, SqlLimits, SqlQuota, SqlUsage, SqlCatalog, SqlRuntimeKeys,
            SqlCache, SqlHistory, SqlResponses, SqlInspector, SqlJobs):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        """``?`` placeholders on every backend (``pg_conn.PgConnection`` converts them)."""
        return self._conn.execute(statement, tuple(params))
