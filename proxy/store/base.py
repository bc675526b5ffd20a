"""The key store interface: what the key manager needs from a database, in plain data.

A backend (``proxy.store.sqlite.SQLiteStore`` today, PostgreSQL later) provides a ``KeyStore``:
transactions that yield a ``KeyTx`` (row operations on keys, per-model cooldowns and the audit log),
a cheap change token, and a writability check. Rows come back as ``KeyState`` / dicts / floats, never
as driver objects, so the same tests (``tests/unit/test_store_sqlite.py``) can run on every backend.

Every call that may wait for a lock waits cooperatively (never inside a C busy handler, which would
freeze every greenlet of a gevent worker) and gives up with ``StoreUnavailable`` at its deadline.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.keys.state import KeyState
    from proxy.store.runtime_keys import RuntimeKeyRow

from proxy.store.clients import ClientTx
from proxy.store.jobs import JobTx
from proxy.store.quota import QuotaTx

MAX_COOLDOWNS_PER_KEY = 1024  # per-model cooldown rows kept per key (client input must not grow state)


class StoreUnavailable(Exception):
    """The database is locked past the call's deadline, or unusable; nothing was changed."""


class StoreUnreachable(StoreUnavailable):
    """The database server cannot be reached at all (PostgreSQL down or the network to it): what can be
    served from the last view is, and what must be written waits in memory (docs/postgresql.md)."""


class KeyTx(ClientTx, QuotaTx, JobTx, Protocol):
    """Row operations inside one transaction. Conditional transitions return True when they applied.

    Client keys (``clients``, ``client``, ``insert_client``, ``update_client``, ``client_keys``, ...) are
    ``proxy.store.clients.ClientTx``, quota pacing ``proxy.store.quota.QuotaTx``; ``SqlTx`` implements
    them all."""

    # keys
    def keys(self) -> list[KeyState]: ...
    def key(self, kid: str) -> KeyState | None: ...
    def upsert_configured(self, kid: str, provider: str, label: str | None, weight: float,
                          now: float) -> None: ...
    def insert_retired(self, kid: str, provider: str, label: str | None, weight: float,
                       now: float) -> None: ...
    def update(self, kid: str, **fields: Any) -> None: ...
    def add_counters(self, kid: str, requests: int, errors: int, latency_ms_total: float,
                     latency_samples: int) -> None: ...
    def mark_invalid(self, kid: str, reason: str | None, now: float) -> bool: ...
    def mark_valid(self, kid: str, now: float) -> bool: ...
    def claim_half_open(self, kid: str, now: float, stale_before: float) -> bool: ...
    def claim_revalidation(self, kid: str, now: float, due_before: float) -> bool: ...

    # per-model cooldowns
    def cooldowns(self, kid: str, now: float) -> dict[str, float]: ...
    def all_cooldowns(self, now: float) -> dict[str, dict[str, float]]: ...
    def raise_cooldown(self, kid: str, model: str, until: float, now: float,
                       limit: int = MAX_COOLDOWNS_PER_KEY) -> None: ...
    def replace_cooldowns(self, kid: str, cooldowns: dict[str, float]) -> None: ...
    def purge_cooldowns(self, before: float) -> None: ...

    # runtime keys (encrypted secrets: proxy.store.runtime_keys)
    def runtime_keys(self) -> list[RuntimeKeyRow]: ...
    def runtime_key(self, kid: str) -> RuntimeKeyRow | None: ...
    def insert_runtime_key(self, row: RuntimeKeyRow) -> None: ...
    def set_runtime_secret(self, kid: str, secret_enc: str) -> None: ...
    def delete_runtime_key(self, kid: str) -> bool: ...

    # audit
    def add_audit(self, at: float, actor: str, action: str, kid: str | None, before: dict | None,
                  after: dict | None) -> None: ...
    def audit(self, limit: int) -> list[dict]: ...
    def last_actions(self, action: str) -> dict[str, dict]: ...


class KeyStore(Protocol):
    def transaction(self, timeout: float | None = None) -> AbstractContextManager[KeyTx]:
        """A write transaction (all or nothing). Waits at most ``timeout`` seconds (default: the
        store's lock wait) for the write lock, cooperatively, then raises StoreUnavailable."""
        ...

    def snapshot(self) -> AbstractContextManager[KeyTx]:
        """A consistent read of several tables without taking the write lock."""
        ...

    def change_token(self) -> int:
        """Changes when another connection committed; cheap (~µs), called on every acquire."""
        ...

    def check_writable(self, timeout: float) -> str | None:
        """None when a write transaction can start within ``timeout`` seconds, else the reason."""
        ...

    def close(self) -> None: ...


def bounded_cooldowns(cooldowns: dict[str, float], now: float,
                      limit: int = MAX_COOLDOWNS_PER_KEY) -> dict[str, float]:
    """At most ``limit`` cooldowns: expired ones go first, then the soonest-expiring (ties by model).

    Backends apply the same rule in SQL so the in-memory view and the rows agree."""
    if len(cooldowns) <= limit:
        return cooldowns
    live = {m: u for m, u in cooldowns.items() if u > now}
    if len(live) <= limit:
        return live
    keep = sorted(live.items(), key=lambda mu: (mu[1], mu[0]))[len(live) - limit:]
    return dict(keep)
