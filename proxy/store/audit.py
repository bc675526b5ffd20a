"""Portable SQL for the audit log (part of ``KeyTx``): who changed what, before and after, as JSON."""
from __future__ import annotations

import json
from typing import Any


class SqlAudit:
    """The audit half of ``KeyTx`` (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def add_audit(self, at: float, actor: str, action: str, kid: str | None, before: dict | None,
                  after: dict | None) -> None:
        self._run("INSERT INTO audit(at, actor, action, key_id, before, after) VALUES (?,?,?,?,?,?)",
                  (at, actor, action, kid, _json(before), _json(after)))

    def audit(self, limit: int) -> list[dict]:
        rows = self._run("SELECT id, at, actor, action, key_id, before, after FROM audit"
                         " ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [{"id": i, "at": at, "actor": actor, "action": action, "key_id": kid,
                 "before": json.loads(b) if b else None, "after": json.loads(a) if a else None}
                for i, at, actor, action, kid, b, a in (tuple(r) for r in rows)]

    def last_actions(self, action: str) -> dict[str, dict]:
        """Per key, who did ``action`` last and when: ``{key_id: {"actor", "at"}}``."""
        rows = self._run("SELECT key_id, actor, at FROM audit WHERE id IN (SELECT MAX(id) FROM audit"
                         " WHERE action = ? AND key_id IS NOT NULL GROUP BY key_id)", (action,)).fetchall()
        return {kid: {"actor": actor, "at": at} for kid, actor, at in (tuple(r) for r in rows)}


def _json(obj: dict | None) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True)
