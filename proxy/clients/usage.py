"""Usage records (one per data-plane request, written in batches), cost from prices, daily rollups."""
from __future__ import annotations

from collections.abc import Callable

from proxy.clients.model import Finished
from proxy.config import Config
from proxy.store.base import KeyStore


class UsageLog:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.config, self.store, self.clock = config, store, clock

    def cost(self, done: Finished) -> float | None:
        """USD for ``done``'s tokens, or None when the model has no price (never a silent $0)."""
        return None

    def record(self, done: Finished, cost_usd: float | None) -> None:
        """Queue one usage record; the background flush writes the queue in one transaction."""

    def start(self) -> None:
        """Start the flusher (gunicorn's post_worker_init, via Gateway.start_background)."""

    def close(self) -> None:
        """Flush what is queued and stop."""
