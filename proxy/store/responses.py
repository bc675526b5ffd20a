"""Portable SQL for stored Responses API answers (part of ``KeyTx``): one row per stored response, per
client, served until it expires (``previous_response_id``, ``GET`` / ``DELETE /v1/responses/{id}``).
Rows hold JSON text the caller made; the caller passes ``now`` (no clock in here)."""
from __future__ import annotations

from typing import Any, Protocol


class ResponseTx(Protocol):
    """The stored-responses half of a transaction (``SqlResponses`` is the portable implementation)."""

    def save_response(self, rid: str, client_id: str, created_at: float, expires_at: float, response: str,
                      conversation: str) -> None: ...
    def load_response(self, rid: str, client_id: str, now: float) -> tuple[str, str] | None: ...
    def delete_response(self, rid: str, client_id: str, now: float) -> bool: ...
    def purge_responses(self, now: float, limit: int = 100) -> int: ...


class SqlResponses:
    """``ResponseTx`` in SQL that SQLite and PostgreSQL both accept (``SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def save_response(self, rid: str, client_id: str, created_at: float, expires_at: float, response: str,
                      conversation: str) -> None:
        self._run("INSERT INTO stored_responses(id, client_id, created_at, expires_at, response,"
                  " conversation) VALUES (?,?,?,?,?,?)",
                  (rid, client_id, created_at, expires_at, response, conversation))

    def load_response(self, rid: str, client_id: str, now: float) -> tuple[str, str] | None:
        """(response JSON, conversation JSON) of a live row of this client, else None (another client's
        row is as absent as a missing one)."""
        row = self._run("SELECT response, conversation FROM stored_responses"
                        " WHERE id=? AND client_id=? AND expires_at>?", (rid, client_id, now)).fetchone()
        return (row[0], row[1]) if row else None

    def delete_response(self, rid: str, client_id: str, now: float) -> bool:
        return self._run("DELETE FROM stored_responses WHERE id=? AND client_id=? AND expires_at>?",
                         (rid, client_id, now)).rowcount > 0

    def purge_responses(self, now: float, limit: int = 100) -> int:
        """Delete at most ``limit`` expired rows (an index range; called with each save)."""
        return self._run("DELETE FROM stored_responses WHERE id IN (SELECT id FROM stored_responses"
                         " WHERE expires_at<=? LIMIT ?)", (now, int(limit))).rowcount
