"""Client keys: who is calling (401 when nobody valid), and which models they may use (403).

The key comes as ``Authorization: Bearer`` or ``x-api-key`` (what the openai and anthropic SDKs send)
and is looked up by its SHA-256: no client secret is kept in memory or in the database. Upstream
credentials never come from clients.
"""
from __future__ import annotations

from collections.abc import Callable

from proxy import model_names
from proxy.clients.model import Client, config_client_id, key_hash, key_hint, looks_like_key
from proxy.config import ClientConfig, Config
from proxy.errors import Forbidden, Unauthorized
from proxy.providers.toolkit import HeaderLookup
from proxy.store.base import KeyStore

HOW_TO = ("Send a keyrelay client key as 'Authorization: Bearer kr-...' (or 'x-api-key'). An operator "
          "creates one with `keyrelay clients create NAME` or POST /admin/api/clients.")


def presented_key(headers: HeaderLookup) -> str | None:
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (headers.get("x-api-key") or "").strip() or None


def client_from_config(c: ClientConfig, now: float = 0.0) -> Client:
    return Client(
        id=config_client_id(c.name), name=c.name, team=c.team, models=c.models, rpm=c.rpm, tpm=c.tpm,
        max_concurrent=c.max_concurrent, model_limits=c.model_limits, budget_usd=c.budget_usd,
        budget_period=c.budget_period, token_quota=c.token_quota, quota_period=c.quota_period,
        expires_at=c.expires_at, enabled=c.enabled, metadata=c.metadata, source="config",
        key_hint=key_hint(c.key), created_at=now, updated_at=now)


class ClientAuth:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock
        self.open = config.open_access
        self._by_hash = {key_hash(c.key): client_from_config(c) for c in config.clients}

    def lookup(self, secret: str) -> Client | None:
        return self._by_hash.get(key_hash(secret))

    def authenticate(self, headers: HeaderLookup) -> Client | None:
        """The calling client; None when the gateway is open and no client key was sent (a placeholder
        such as the SDKs' "unused" counts as none). A wrong, revoked or expired key is always a 401."""
        secret = presented_key(headers)
        if secret is None or (self.open and not looks_like_key(secret)):
            if self.open:
                return None
            raise Unauthorized(f"Missing client key. {HOW_TO}", code="invalid_api_key")
        client = self.lookup(secret)
        if client is None:
            raise Unauthorized(f"Unknown client key. {HOW_TO}", code="invalid_api_key")
        if not client.enabled:
            raise Unauthorized("This client key was revoked.", code="invalid_api_key")
        if client.expires_at is not None and client.expires_at <= self.clock():
            raise Unauthorized("This client key has expired.", code="invalid_api_key")
        return client

    def allowed(self, client: Client | None, model: str) -> bool:
        """May ``client`` use ``model`` (a client-facing name)? Anonymous callers of an open gateway may."""
        return client is None or not client.models or model_names.matches(model, client.models)

    def authorize(self, client: Client, model: str) -> None:
        if not self.allowed(client, model):
            raise Forbidden(f"This client key may not use the model '{model}'.", code="model_not_allowed",
                            param="model")
