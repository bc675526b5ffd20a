"""Portable SQL for runtime keys (part of ``KeyTx``): encrypted secrets of keys added through the admin
API or the CLI. Only Fernet tokens are stored; encryption and decryption happen in ``proxy.keys``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuntimeKeyRow:
    key_id: str
    provider: str
    secret_enc: str = field(repr=False)  # a Fernet token, still: not for logs
    hint: str | None
    project: str | None
    created_at: float
    created_by: str


_COLUMNS = "key_id, provider, secret_enc, hint, project, created_at, created_by"


class SqlRuntimeKeys:
    """The runtime-key half of ``KeyTx`` (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def runtime_keys(self) -> list[RuntimeKeyRow]:
        rows = self._run(f"SELECT {_COLUMNS} FROM runtime_keys ORDER BY key_id").fetchall()
        return [RuntimeKeyRow(*tuple(r)) for r in rows]

    def runtime_key(self, kid: str) -> RuntimeKeyRow | None:
        row = self._run(f"SELECT {_COLUMNS} FROM runtime_keys WHERE key_id=?", (kid,)).fetchone()
        return None if row is None else RuntimeKeyRow(*tuple(row))

    def insert_runtime_key(self, row: RuntimeKeyRow) -> None:
        """A new runtime secret (its ``keys`` row must exist); replaces an earlier one of the same id."""
        self._run(f"INSERT INTO runtime_keys({_COLUMNS}) VALUES (?,?,?,?,?,?,?)"
                  " ON CONFLICT(key_id) DO UPDATE SET secret_enc=excluded.secret_enc, hint=excluded.hint,"
                  " project=excluded.project, created_at=excluded.created_at,"
                  " created_by=excluded.created_by",
                  (row.key_id, row.provider, row.secret_enc, row.hint, row.project, row.created_at,
                   row.created_by))

    def set_runtime_secret(self, kid: str, secret_enc: str) -> None:
        """Re-encrypted under the current secret key (rotation)."""
        self._run("UPDATE runtime_keys SET secret_enc=? WHERE key_id=?", (secret_enc, kid))

    def delete_runtime_key(self, kid: str) -> bool:
        return self._run("DELETE FROM runtime_keys WHERE key_id=?", (kid,)).rowcount == 1
