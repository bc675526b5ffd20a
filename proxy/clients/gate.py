"""The client side of one request, in order: authenticate → authorize the model → admit (limits, budget)
→ … the relay serves … → finish (settle the reservation, cost, one usage record).

``Gate`` (one per worker, ``Gateway.clients``) composes three parts, each with its own module and store
tables: ``auth.ClientAuth`` (client keys), ``limits.Limiter`` (rpm / tpm / concurrency / budgets,
exact across workers) and ``usage.UsageLog`` (usage records, cost, rollups).
"""
from __future__ import annotations

import time
from typing import Any

from proxy.clients.auth import ClientAuth
from proxy.clients.limits import Limiter
from proxy.clients.model import Admission, Client, Finished
from proxy.clients.usage import UsageLog
from proxy.config import Config
from proxy.providers.toolkit import HeaderLookup
from proxy.store.base import KeyStore


class Gate:
    def __init__(self, config: Config, store: KeyStore, clock: Any = time.time) -> None:
        self.auth = ClientAuth(config, store, clock)
        self.limiter = Limiter(config, store, clock)
        self.usage = UsageLog(config, store, clock)

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
        if done.admission is not None:
            self.limiter.settle(done.admission, done, cost)
        self.usage.record(done, cost)

    def start(self) -> None:
        self.auth.start()
        self.usage.start()

    def close(self) -> None:
        self.usage.close()
        self.auth.close()
