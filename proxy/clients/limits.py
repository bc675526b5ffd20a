"""Per-client limits that hold across every worker: rpm, tpm, max_concurrent, budgets and token quotas."""
from __future__ import annotations

from collections.abc import Callable

from proxy.clients.model import Admission, Client, Finished
from proxy.config import Config
from proxy.store.base import KeyStore


class Limiter:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.config, self.store, self.clock = config, store, clock

    def admit(self, client: Client, model: str, body: dict) -> Admission | None:
        return Admission(client, model)

    def settle(self, admission: Admission, done: Finished, cost_usd: float | None) -> None:
        """Give back what the request did not use; add its cost and tokens to the period's spend."""
