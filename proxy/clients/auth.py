"""Client keys: who is calling (401 when nobody valid), and which models they may use (403).

The key comes as ``Authorization: Bearer`` or ``x-api-key`` (what the openai and anthropic SDKs send)
and is looked up by its SHA-256 in this worker's view of the ``clients`` / ``client_keys`` tables: no
client secret is kept in memory or in the database. Upstream credentials never come from clients.

The view is reloaded when another worker (or the CLI) changed a client: at most every
``REFRESH_S`` the store's change token (``PRAGMA data_version``, ~µs) is compared, and only when it
moved is the one-row ``client_changes.version`` read; the tables are reloaded only when that version
moved (limiter and usage writes move the token, not the version). A change through this worker
reloads at once, and an unknown key forces the check (a key just created through another worker works
at once). So create / revoke / rotate / PATCH are obeyed by every worker within ~0.1 s.
``last_used_at`` is kept in memory and written in one batch every ``TOUCH_S`` (and at close).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from proxy import model_names
from proxy.clients.model import Client, key_hash, looks_like_key
from proxy.clients.registry import ClientRegistry
from proxy.config import Config
from proxy.errors import Forbidden, Unauthorized
from proxy.observability import quiet
from proxy.providers.toolkit import HeaderLookup
from proxy.store.base import KeyStore, StoreUnavailable

log = logging.getLogger("keyrelay.clients")

HOW_TO = ("Send a keyrelay client key as 'Authorization: Bearer kr-...' (or 'x-api-key'). An operator "
          "creates one with `keyrelay clients create NAME` or POST /admin/api/clients.")
NO_CLIENTS = ("This keyrelay requires a client key and has none yet (no client in its config or "
              "database), so it answers every request with 401. An operator creates one with `keyrelay "
              "clients create NAME` (or POST /admin/api/clients, or a 'clients:' entry in the config) and "
              "sends it as 'Authorization: Bearer kr-...'; or sets 'auth: {mode: open}' when an "
              "authenticating proxy stands in front.")
REFRESH_S = 0.1
TOUCH_S = 5.0


def presented_key(headers: HeaderLookup) -> str | None:
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (headers.get("x-api-key") or "").strip() or None


def startup_notice(config: Config, store: KeyStore, now: float) -> str | None:
    """What the startup log says about who may call the data plane (config and runtime clients)."""
    if config.auth.mode == "open":
        return ("auth.mode is open: the data plane needs no client key; anyone who reaches the port spends "
                "the upstream keys (keep it behind an authenticating proxy)")
    if config.open_access:
        return None  # only the built-in mock serves: config.notices says so
    with store.snapshot() as tx:
        usable = tx.count_usable_clients(now)
    if usable == 0 and not any(c.client.enabled and (c.client.expires_at is None or c.client.expires_at > now)
                               for c in config.clients):
        return ("no client key exists (config or runtime): the data plane answers 401 to every request "
                "until one is created with `keyrelay clients create NAME` (or auth.mode: open is set)")
    return None


class ClientAuth:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock
        self.open = config.open_access
        self.registry = ClientRegistry(store, clock, on_change=self.reload)
        self._by_hash: dict[str, tuple[str, float | None]] = {}  # key hash -> (client id, key expiry)
        self._clients: dict[str, Client] = {}
        self._version = -1
        self._token: int | None = None
        self._checked = 0.0  # monotonic
        self._used: dict[str, float] = {}  # client id -> last use, not yet written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registry.sync_config(config.clients)  # also loads the view (on_change)

    # --- the per-worker view ----------------------------------------------------------------------

    def reload(self) -> None:
        token = self.store.change_token()
        with self.store.snapshot() as tx:
            version = tx.clients_version()
            clients = {c.id: c for c in tx.clients()}
            keys = {digest: (cid, exp) for digest, cid, exp in tx.client_keys()}
        self._clients, self._by_hash, self._version, self._token = clients, keys, version, token
        self._checked = time.monotonic()

    def refresh(self, force: bool = False) -> None:
        """Reload when another connection changed a client (checked at most every REFRESH_S, or now
        when ``force``: an unknown key may have been created a moment ago through another worker)."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        try:
            token = self.store.change_token()
            if token == self._token:
                return
            with self.store.snapshot() as tx:
                version = tx.clients_version()
            self._token = token
            if version != self._version:
                self.reload()
        except StoreUnavailable as exc:  # keep serving the last view; the next check retries
            quiet.warn(log, "client_refresh_failed", "client view not refreshed: %s", exc)

    @property
    def has_clients(self) -> bool:
        return any(c.enabled and c.revoked_at is None for c in self._clients.values())

    def lookup(self, secret: str) -> Client | None:
        entry = self._by_hash.get(key_hash(secret))
        return None if entry is None else self._clients.get(entry[0])

    # --- the data plane ---------------------------------------------------------------------------

    def authenticate(self, headers: HeaderLookup) -> Client | None:
        """The calling client; None when the gateway is open and no client key was sent (a placeholder
        such as the SDKs' "unused" counts as none). A wrong, revoked or expired key is always a 401."""
        self.refresh()
        secret = presented_key(headers)
        if secret is None or (self.open and not looks_like_key(secret)):
            if self.open:
                return None
            if not self.has_clients:
                raise Unauthorized(NO_CLIENTS, code="invalid_api_key")
            raise Unauthorized(f"Missing client key. {HOW_TO}", code="invalid_api_key")
        digest = key_hash(secret)
        entry = self._by_hash.get(digest)
        if entry is None:  # a key created through another worker a moment ago is known at once
            self.refresh(force=True)
            entry = self._by_hash.get(digest)
        client = None if entry is None else self._clients.get(entry[0])
        if entry is None or client is None:
            raise Unauthorized(f"Unknown client key. {HOW_TO}", code="invalid_api_key")
        now = self.clock()
        if client.revoked_at is not None:
            raise Unauthorized("This client key was revoked.", code="invalid_api_key")
        if not client.enabled:
            raise Unauthorized("This client key is disabled.", code="invalid_api_key")
        if client.expires_at is not None and client.expires_at <= now:
            raise Unauthorized("This client key has expired.", code="invalid_api_key")
        if entry[1] is not None and entry[1] <= now:
            raise Unauthorized("This client key was rotated and its grace period is over; use the new key.",
                               code="invalid_api_key")
        self._used[client.id] = now
        return client

    def allowed(self, client: Client | None, model: str) -> bool:
        """May ``client`` use ``model`` (a client-facing name)? Anonymous callers of an open gateway may."""
        return client is None or not client.models or model_names.matches(model, client.models)

    def authorize(self, client: Client, model: str) -> None:
        if not self.allowed(client, model):
            raise Forbidden(f"This client key may not use the model '{model}'.", code="model_not_allowed",
                            param="model")

    # --- batched last_used_at ---------------------------------------------------------------------

    def flush(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        try:
            with self.store.transaction(timeout=0.5) as tx:
                tx.touch_clients(used)
        except StoreUnavailable as exc:
            for cid, at in used.items():  # retried at the next flush
                self._used[cid] = max(at, self._used.get(cid, 0.0))
            quiet.warn(log, "client_touch_failed", "last_used_at not written: %s", exc)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="keyrelay-client-touch", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(TOUCH_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
