"""Portable SQL for client keys (part of ``KeyTx``): the ``clients`` rows, the ``client_keys`` hashes
(the current key, and the previous one during a rotation's grace) and the ``client_changes`` version
that every change bumps so workers know when to reload their view. No client secret ever reaches
these tables: a key is its SHA-256 hex and a display hint.
"""
from __future__ import annotations

import json
from typing import Any, Protocol

from proxy.clients.model import Client, ModelLimit

# Columns of the ``clients`` table, in order (migrations/0003_clients.sql).
COLUMNS = (
    "id", "name", "team", "models", "rpm", "tpm", "max_concurrent", "model_limits", "budget_usd",
    "budget_period", "token_quota", "quota_period", "expires_at", "enabled", "metadata", "source",
    "key_hint", "created_at", "updated_at", "last_used_at", "revoked_at",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM clients"
_UPDATABLE = frozenset(COLUMNS) - {"id", "source", "created_at"}


class ClientTx(Protocol):
    """The client-key row operations of ``KeyTx``."""

    def clients(self) -> list[Client]: ...
    def client(self, cid: str) -> Client | None: ...
    def client_by_name(self, name: str) -> Client | None: ...
    def insert_client(self, client: Client) -> None: ...
    def update_client(self, cid: str, **fields: Any) -> None: ...
    def client_keys(self) -> list[tuple[str, str, float | None]]: ...
    def add_client_key(self, digest: str, cid: str, now: float, expires_at: float | None = None) -> None: ...
    def expire_client_keys(self, cid: str, until: float) -> None: ...
    def delete_client_keys(self, cid: str, keep: str | None = None) -> None: ...
    def purge_client_keys(self, cid: str, expired_before: float) -> None: ...
    def touch_clients(self, last_used: dict[str, float]) -> None: ...
    def clients_version(self) -> int: ...
    def bump_clients_version(self) -> None: ...
    def count_usable_clients(self, now: float) -> int: ...


def to_row(c: Client) -> dict[str, Any]:
    return {
        "id": c.id, "name": c.name, "team": c.team, "models": json.dumps(list(c.models)),
        "rpm": c.rpm, "tpm": c.tpm, "max_concurrent": c.max_concurrent,
        "model_limits": limits_json(c.model_limits), "budget_usd": c.budget_usd,
        "budget_period": c.budget_period, "token_quota": c.token_quota, "quota_period": c.quota_period,
        "expires_at": c.expires_at, "enabled": int(c.enabled),
        "metadata": json.dumps(c.metadata, sort_keys=True),
        "source": c.source, "key_hint": c.key_hint, "created_at": c.created_at, "updated_at": c.updated_at,
        "last_used_at": c.last_used_at, "revoked_at": c.revoked_at,
    }


def limits_json(limits: tuple[ModelLimit, ...]) -> str:
    return json.dumps({m.pattern: {k: v for k, v in (("rpm", m.rpm), ("tpm", m.tpm)) if v is not None}
                       for m in limits}, sort_keys=True)


def from_row(row: tuple) -> Client:
    r = dict(zip(COLUMNS, row, strict=True))
    limits = json.loads(r["model_limits"] or "{}")
    return Client(
        id=r["id"], name=r["name"], team=r["team"], models=tuple(json.loads(r["models"] or "[]")),
        rpm=r["rpm"], tpm=r["tpm"], max_concurrent=r["max_concurrent"],
        model_limits=tuple(ModelLimit(p, v.get("rpm"), v.get("tpm")) for p, v in limits.items()),
        budget_usd=r["budget_usd"], budget_period=r["budget_period"], token_quota=r["token_quota"],
        quota_period=r["quota_period"], expires_at=r["expires_at"], enabled=bool(r["enabled"]),
        metadata=json.loads(r["metadata"] or "{}"), source=r["source"], key_hint=r["key_hint"],
        created_at=r["created_at"], updated_at=r["updated_at"], last_used_at=r["last_used_at"],
        revoked_at=r["revoked_at"],
    )


class SqlClients:
    """The client half of ``KeyTx`` (``proxy.store.tx.SqlTx`` supplies ``_run``)."""

    def _run(self, statement: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def clients(self) -> list[Client]:
        return [from_row(tuple(r)) for r in self._run(_SELECT + " ORDER BY name").fetchall()]

    def client(self, cid: str) -> Client | None:
        row = self._run(_SELECT + " WHERE id=?", (cid,)).fetchone()
        return None if row is None else from_row(tuple(row))

    def client_by_name(self, name: str) -> Client | None:
        row = self._run(_SELECT + " WHERE name=?", (name,)).fetchone()
        return None if row is None else from_row(tuple(row))

    def insert_client(self, client: Client) -> None:
        row = to_row(client)
        self._run(f"INSERT INTO clients({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                  [row[c] for c in COLUMNS])
        self.bump_clients_version()

    def update_client(self, cid: str, **fields: Any) -> None:
        """Set columns of one client (``models`` / ``model_limits`` / ``metadata`` as Python values)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable client column(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        if "models" in fields:
            fields["models"] = json.dumps(list(fields["models"]))
        if "model_limits" in fields:
            fields["model_limits"] = limits_json(tuple(fields["model_limits"]))
        if "metadata" in fields:
            fields["metadata"] = json.dumps(fields["metadata"], sort_keys=True)
        if "enabled" in fields:
            fields["enabled"] = int(bool(fields["enabled"]))
        names = sorted(fields)
        self._run(f"UPDATE clients SET {', '.join(f'{n}=?' for n in names)} WHERE id=?",
                  [fields[n] for n in names] + [cid])
        self.bump_clients_version()

    def client_keys(self) -> list[tuple[str, str, float | None]]:
        return [(r[0], r[1], r[2]) for r in self._run(
            "SELECT key_hash, client_id, expires_at FROM client_keys ORDER BY client_id, key_hash"
        ).fetchall()]

    def add_client_key(self, digest: str, cid: str, now: float, expires_at: float | None = None) -> None:
        self._run("INSERT INTO client_keys(key_hash, client_id, created_at, expires_at) VALUES (?,?,?,?)"
                  " ON CONFLICT(key_hash) DO UPDATE SET client_id=excluded.client_id,"
                  " expires_at=excluded.expires_at", (digest, cid, now, expires_at))
        self.bump_clients_version()

    def expire_client_keys(self, cid: str, until: float) -> None:
        """Every key of ``cid`` stops working at ``until`` at the latest (a rotation's grace)."""
        self._run("UPDATE client_keys SET expires_at=? WHERE client_id=?"
                  " AND (expires_at IS NULL OR expires_at>?)",
                  (until, cid, until))
        self.bump_clients_version()

    def delete_client_keys(self, cid: str, keep: str | None = None) -> None:
        self._run("DELETE FROM client_keys WHERE client_id=? AND key_hash<>?", (cid, keep or ""))
        self.bump_clients_version()

    def purge_client_keys(self, cid: str, expired_before: float) -> None:
        """Forget keys of ``cid`` whose grace ended before ``expired_before`` (they then read as unknown)."""
        self._run("DELETE FROM client_keys WHERE client_id=? AND expires_at IS NOT NULL AND expires_at<?",
                  (cid, expired_before))

    def touch_clients(self, last_used: dict[str, float]) -> None:
        """Batched ``last_used_at`` (never moves back; does not bump the version: not part of the view)."""
        for cid, at in sorted(last_used.items()):
            self._run("UPDATE clients SET last_used_at=? WHERE id=?"
                      " AND (last_used_at IS NULL OR last_used_at<?)",
                      (at, cid, at))

    def clients_version(self) -> int:
        row = self._run("SELECT version FROM client_changes WHERE id=1").fetchone()
        return 0 if row is None else int(row[0])

    def bump_clients_version(self) -> None:
        self._run("UPDATE client_changes SET version=version+1 WHERE id=1")

    def count_usable_clients(self, now: float) -> int:
        """Clients that could authenticate now: enabled, not revoked, not expired, with a live key."""
        (n,) = self._run(
            "SELECT COUNT(DISTINCT c.id) FROM clients c JOIN client_keys k ON k.client_id=c.id"
            " WHERE c.enabled=1 AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at>?)"
            " AND (k.expires_at IS NULL OR k.expires_at>?)", (now, now)).fetchone()
        return int(n)
