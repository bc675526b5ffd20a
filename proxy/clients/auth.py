"""Client keys: who is calling (401 when nobody valid), and which models they may use (403)."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from proxy.clients.model import Client
from proxy.config import Config
from proxy.store.base import KeyStore


class ClientAuth:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.config, self.store, self.clock = config, store, clock

    def authenticate(self, headers: Mapping[str, str]) -> Client | None:
        return None

    def authorize(self, client: Client, model: str) -> None:
        """Forbidden (403 ``model_not_allowed``) when ``client`` may not use ``model``."""

    def allowed(self, client: Client | None, model: str) -> bool:
        """May ``client`` use ``model`` (for /v1/models)?"""
        return True
