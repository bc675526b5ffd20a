"""The client side of one request, in order: authenticate → authorize the model → admit (limits, budget)
→ … the relay serves … → finish (settle the reservation, cost, one usage record).

``Gate`` (one per worker, ``Gateway.clients``) composes three parts, each with its own module and store
tables: ``auth.ClientAuth`` (client keys), ``limits.Limiter`` (rpm / tpm / concurrency / budgets,
exact across workers) and ``usage.UsageLog`` (usage records, cost, rollups).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from proxy.clients.auth import ClientAuth
from proxy.clients.limits import Limiter
from proxy.clients.model import Admission, Client, Finished
from proxy.clients.usage import UsageLog
from proxy.config import Config
from proxy.observability import metrics, quiet
from proxy.providers.toolkit import HeaderLookup
from proxy.store.base import KeyStore, StoreUnavailable

log = logging.getLogger("keyrelay")
MAX_UNSETTLED = 10_000  # settlements kept per worker while the database is unavailable; more are dropped
REPLAY_PER_REQUEST = 20


class Gate:
    def __init__(self, config: Config, store: KeyStore, clock: Any = time.time) -> None:
        self.auth = ClientAuth(config, store, clock)
        self.limiter = Limiter(config, store, clock)
        self.usage = UsageLog(config, store, clock)
        self._unsettled: list[tuple[Admission, Finished, float | None]] = []
        self._lock = threading.Lock()

    def authenticate(self, headers: HeaderLookup) -> Client | None:
        """The calling client (None when no key is needed); Unauthorized (401) otherwise."""
        return self.auth.authenticate(headers)

    def admit(self, client: Client | None, model: str, body: dict) -> Admission | None:
        """Forbidden (403 model_not_allowed) or RateLimited (429) before any upstream call."""
        if client is None:
            return None
        self.auth.authorize(client, model)
        return self.limiter.admit(client, model, body)

    def finish(self, done: Finished) -> None:
        cost = 0.0 if done.cached else self.usage.cost(done)
        if self._unsettled:
            self._settle_deferred()
        if done.admission is not None:
            self._settle(done.admission, done, cost)
        self.usage.record(done, cost)

    def _settle(self, admission: Admission, done: Finished, cost: float | None) -> bool:
        """Settle now, or keep it (bounded) for the next request when the store is unavailable: the
        spend of a request served during a database outage is still charged once it is back."""
        try:
            self.limiter.settle(admission, done, cost,
                                failed=lambda exc: self._settle_failed(exc, admission, done, cost))
            return True
        except StoreUnavailable as exc:
            self._keep(exc, admission, done, cost)
            return False

    def _settle_failed(self, exc: BaseException, admission: Admission, done: Finished,
                       cost: float | None) -> None:
        """A settlement that joined another request's transaction and failed there (never raises: it
        runs in that request's greenlet)."""
        if isinstance(exc, StoreUnavailable):
            self._keep(exc, admission, done, cost)
        else:
            log.error("limit settlement failed: %s", exc, exc_info=exc, extra={"event": "settlement_error"})

    def _keep(self, exc: StoreUnavailable, admission: Admission, done: Finished, cost: float | None) -> None:
        with self._lock:
            if len(self._unsettled) < MAX_UNSETTLED:
                self._unsettled.append((admission, done, cost))
            else:
                metrics.STORE_DROPPED.labels("settlement").inc()
        quiet.warn(log, "settlement_deferred", "limit settlement deferred: %s", exc)

    def _settle_deferred(self) -> None:
        """A few at a time (each is a transaction): a backlog drains over the next requests."""
        with self._lock:
            pending = self._unsettled[:REPLAY_PER_REQUEST]
            del self._unsettled[:REPLAY_PER_REQUEST]
        for i, (admission, done, cost) in enumerate(pending):
            if not self._settle(admission, done, cost):  # still away (it was kept again): keep the rest
                with self._lock:
                    self._unsettled[:0] = pending[i + 1:]
                return

    def start(self) -> None:
        self.auth.start()
        self.usage.start()
        self.limiter.start()

    def close(self) -> None:
        self.limiter.close()
        self.usage.close()
        self.auth.close()
