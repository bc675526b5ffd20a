"""Upstream keys added and removed at runtime (admin API, ``keyrelay keys``): validated, encrypted with
the ``Vault``, written with their ``keys`` row and audit row in one transaction; the pool reloads, and
every other worker picks the change up at its next acquire (the store's change token moved).

A runtime key's id is the same fingerprint as a configured key's, so the same secret is the same key
however it arrived (adding a key the config already has is a duplicate). Removing a runtime key retires
its ``keys`` row (history kept) and deletes its encrypted secret; adding it again restores the row with
the weight given now (an old weight override is cleared, as for a config key that comes back).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..config import KEYLESS_TYPES, Config
from ..errors import OUTCOMES, TRANSIENT
from ..store.base import KeyTx
from ..store.runtime_keys import RuntimeKeyRow
from .admin import audit_view
from .ids import key_id, scrub
from .key_format import hint, malformed, split_import
from .pool import KeyPool, check_weight
from .specs import Key
from .vault import NO_SECRET_KEY, NoSecretKey, UndecryptableSecret, Vault

MAX_IMPORT = 10_000  # keys per import request
MAX_LABEL = 100
PROJECT = re.compile(r"[A-Za-z0-9][\w.:-]{0,99}")


class RuntimeKeyError(Exception):
    """A refused runtime-key operation: HTTP status, error code, message (never quoting a secret)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def vault_for(config: Config) -> Vault:
    return Vault(config.server.secret_key, config.server.secret_keys_previous)


def check_label(label: Any) -> str | None:
    if label is None:
        return None
    if not isinstance(label, str) or len(label.strip()) > MAX_LABEL or not label.isprintable():
        raise RuntimeKeyError(400, "invalid_label", f"Invalid 'label': expected a printable string of at "
                              f"most {MAX_LABEL} characters.", "label")
    return label.strip() or None


def _check_project(project: Any) -> str | None:
    if project is None:
        return None
    if not isinstance(project, str) or not PROJECT.fullmatch(project):
        raise RuntimeKeyError(400, "invalid_project", "Invalid 'project': letters, digits, '.', '_', ':' or "
                              "'-', at most 100 characters.", "project")
    return project


class RuntimeKeys:
    def __init__(self, pool: KeyPool, providers: Mapping[str, str]) -> None:
        """``providers``: name → type of the configured providers (keys can be added to keyed ones)."""
        self.pool = pool
        self.store = pool.store
        self.providers = dict(providers)

    @classmethod
    def for_config(cls, pool: KeyPool, config: Config) -> RuntimeKeys:
        return cls(pool, {p.name: p.type for p in config.providers})

    # --- add / import -------------------------------------------------------------------------------

    def add(self, provider: Any, secret: Any, actor: str, *, label: Any = None, weight: Any = 1.0,
            project: Any = None) -> dict:
        """One key: 201 material ``{id, provider, hint, label, weight, project, source}``."""
        self._check_provider(provider)
        if not isinstance(secret, str) or not secret.strip():
            raise RuntimeKeyError(400, "missing_required_parameter", "Missing 'key': the upstream API key.",
                                  "key")
        secret = secret.strip()
        why = malformed(secret)
        if why:
            raise RuntimeKeyError(400, "invalid_key_format", f"Invalid 'key': {why}.", "key")
        label, project = check_label(label), _check_project(project)
        try:
            w = check_weight(weight)
        except ValueError as exc:
            raise RuntimeKeyError(400, "invalid_weight", f"Invalid 'weight': {exc}", "weight") from None
        token = self._encrypt(secret)
        kid = key_id(provider, secret)
        now = self.pool.clock()
        with self.store.transaction() as tx:
            known = tx.key(kid)
            if known is not None and not known.retired:
                where = "the config" if self.pool.source(kid) == "config" else "a runtime key"
                raise RuntimeKeyError(409, "key_exists", f"This key is already in use as {kid} ({where}).")
            self._insert(tx, kid, provider, token, hint(secret), label, w, project, now, actor)
        self.pool.reload()
        return {"id": kid, "provider": provider, "hint": hint(secret), "label": label, "weight": w,
                "project": project, "source": "runtime"}

    def import_keys(self, provider: Any, text: Any, actor: str) -> dict:
        """Many keys in one transaction: ``{added, duplicates, invalid, ids, invalid_lines}``. A duplicate
        is a key already in use (config or runtime) or repeated in the text; blank items and ``#`` lines
        are skipped; ``invalid_lines`` say why, by line number, never quoting the key."""
        self._check_provider(provider)
        if not isinstance(text, str):
            raise RuntimeKeyError(400, "invalid_type", "Invalid 'keys': expected a string of keys separated "
                                  "by newlines or commas.", "keys")
        items = split_import(text)
        if len(items) > MAX_IMPORT:
            raise RuntimeKeyError(400, "too_many_keys", f"Too many keys: at most {MAX_IMPORT} per import.",
                                  "keys")
        if not self.pool.vault.available:
            raise RuntimeKeyError(409, "secret_key_not_set", NO_SECRET_KEY)
        good: dict[str, str] = {}
        invalid: list[dict] = []
        duplicates = 0
        for line, secret in items:
            why = malformed(secret)
            if why:
                invalid.append({"line": line, "reason": why})
                continue
            kid = key_id(provider, secret)
            if kid in good:
                duplicates += 1
            else:
                good[kid] = secret
        tokens = {kid: self._encrypt(s) for kid, s in good.items()}
        now = self.pool.clock()
        added: list[str] = []
        with self.store.transaction() as tx:
            for kid, secret in good.items():
                known = tx.key(kid)
                if known is not None and not known.retired:
                    duplicates += 1
                    continue
                self._insert(tx, kid, provider, tokens[kid], hint(secret), None, 1.0, None, now, actor,
                             action="import")
                added.append(kid)
        if added:
            self.pool.reload()
        return {"added": len(added), "duplicates": duplicates, "invalid": len(invalid), "ids": added,
                "invalid_lines": invalid}

    # --- remove / label / test ----------------------------------------------------------------------

    def remove(self, kid: str, actor: str) -> None:
        """Retire a runtime key and delete its secret; 404 unknown, 409 for a config key."""
        now = self.pool.clock()
        with self.store.transaction() as tx:
            before = audit_view(tx, kid, now)
            if before is None:
                raise KeyError(kid)
            row = tx.runtime_key(kid)
            if self.pool.source(kid) == "config":
                raise RuntimeKeyError(409, "config_key", (
                    f"Key {kid} comes from the config file (providers[].keys), not from the admin API: "
                    "remove it there and reload (POST /admin/api/reload). To stop using it now, disable it "
                    f"(POST /admin/api/keys/{kid}/disable)."))
            if row is None:
                raise RuntimeKeyError(409, "key_retired", f"Key {kid} is retired (removed, or no longer "
                                      "configured): there is nothing to remove.")
            tx.delete_runtime_key(kid)
            tx.update(kid, retired=True, retired_at=now)
            tx.add_audit(now, actor, "remove", kid, {**before, "source": "runtime", "hint": row.hint},
                         {**(audit_view(tx, kid, now) or {}), "retired": True})
        self.pool.reload()

    def set_label(self, kid: str, label: Any, actor: str) -> None:
        value = check_label(label)
        now = self.pool.clock()
        with self.store.transaction() as tx:
            st = tx.key(kid)
            if st is None:
                raise KeyError(kid)
            tx.update(kid, label=value)
            tx.add_audit(now, actor, "set_label", kid, {"label": st.label}, {"label": value})
        self.pool.reload_key(kid)

    def test(self, kid: str, probe: Callable[[Key], dict], actor: str,
             clock: Callable[[], float] = time.monotonic) -> dict:
        """A live probe through the provider's adapter: ``{ok, outcome, latency_ms, error}`` (outcome one
        of ok / quota / auth / transient / client). Audited; the key's state is left as it is."""
        if self.pool.get(kid) is None:  # get() looks at the store first: added through another worker
            raise KeyError(kid)
        key = self.pool.key(kid)
        if key is None:
            raise RuntimeKeyError(409, "key_not_usable", f"Key {kid} has no secret in this "
                                  "gateway (retired, or a runtime key the configured secret key cannot "
                                  "decrypt): nothing to test.")
        started = clock()
        result = probe(key)
        latency_ms = round((clock() - started) * 1000, 1)
        outcome = result["outcome"] if result["outcome"] in OUTCOMES else TRANSIENT
        out = {"ok": bool(result["ok"]), "outcome": outcome, "latency_ms": latency_ms,
               "error": scrub(result.get("error"), key.secret)}
        now = self.pool.clock()
        with self.store.transaction() as tx:
            tx.add_audit(now, actor, "test", kid, None, {"outcome": outcome, "latency_ms": latency_ms})
        return out

    # --- rotation -----------------------------------------------------------------------------------

    def rotate_secrets(self, actor: str) -> dict:
        """Re-encrypt every runtime secret under the current secret key (after a rotation)."""
        rotated, failed = [], []
        with self.store.transaction() as tx:
            for r in tx.runtime_keys():
                try:
                    tx.set_runtime_secret(r.key_id, self.pool.vault.rotate(r.secret_enc))
                    rotated.append(r.key_id)
                except UndecryptableSecret:
                    failed.append(r.key_id)
            tx.add_audit(self.pool.clock(), actor, "rotate_secret_key", None, None,
                         {"rotated": len(rotated), "undecryptable": failed})
        self.pool.reload()
        return {"rotated": len(rotated), "undecryptable": failed}

    # --- helpers ------------------------------------------------------------------------------------

    def _check_provider(self, provider: Any) -> None:
        if not isinstance(provider, str) or provider not in self.providers:
            names = ", ".join(sorted(n for n, t in self.providers.items() if t not in KEYLESS_TYPES))
            raise RuntimeKeyError(400, "unknown_provider", "Invalid 'provider': expected one of the "
                                  f"configured providers ({names or 'none takes keys'}).", "provider")
        if self.providers[provider] in KEYLESS_TYPES:
            raise RuntimeKeyError(400, "keyless_provider", f"Provider {provider!r} is of type "
                                  f"{self.providers[provider]}, which takes no API key.", "provider")

    def _encrypt(self, secret: str) -> str:
        try:
            return self.pool.vault.encrypt(secret)
        except NoSecretKey as exc:
            raise RuntimeKeyError(409, "secret_key_not_set", str(exc)) from None

    @staticmethod
    def _insert(tx: KeyTx, kid: str, provider: str, token: str, key_hint: str | None, label: str | None,
                weight: float, project: str | None, now: float, actor: str, action: str = "add") -> None:
        """The ``keys`` row (new, or a retired one restored with this weight) and the encrypted secret."""
        before = audit_view(tx, kid, now)
        if before is None:
            tx.insert_retired(kid, provider, label, weight, now)
        tx.update(kid, retired=False, retired_at=None, label=label, config_weight=weight,
                  weight_override=None)
        tx.insert_runtime_key(RuntimeKeyRow(kid, provider, token, key_hint, project, now, actor))
        after = {**(audit_view(tx, kid, now) or {}), "source": "runtime", "hint": key_hint, "label": label,
                 "project": project}
        if before is not None:  # a removed key comes back: say what was reset
            after["restored"] = True
        tx.add_audit(now, actor, action, kid, before, after)

