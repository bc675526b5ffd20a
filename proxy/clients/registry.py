"""Operator actions on clients (admin API and CLI): validate, create, change, revoke, rotate; config sync.

Each change and its audit row are one store transaction that also bumps ``client_changes.version``, so
every worker's ``ClientAuth`` reloads its view within its refresh interval. Keys are generated here and
returned once (create, rotate); only their SHA-256 and a hint are written.

Config clients (``source: config``) belong to the YAML (GitOps): the admin API and CLI may read them but
not PATCH, revoke or rotate them (409 ``config_client``); change the file and reload. A config client
removed from the YAML is disabled at the next start-up (its id and usage history stay).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.clients.model import (
    PERIODS,
    Client,
    ModelLimit,
    key_hash,
    key_hint,
    new_client_id,
    new_key,
)
from proxy.config import ClientConfig
from proxy.errors import BadRequest, GatewayError, NotFound
from proxy.store.base import KeyStore, KeyTx

log = logging.getLogger("keyrelay.clients")

NAME = re.compile(r"[A-Za-z0-9][\w.@-]{0,63}")  # as config.py's client names
GLOB = re.compile(r"[A-Za-z0-9._:/*?\[\]!-]{1,256}")
MAX_GLOBS = 256
MAX_METADATA_BYTES = 8192
MAX_LIMIT = 10**12
MAX_GRACE_S = 30 * 86400
ROTATED_KEPT_S = 7 * 86400  # a rotated key's hash is kept this long past its grace: 401 says "rotated"
FIELDS = ("name", "team", "models", "rpm", "tpm", "max_concurrent", "model_limits", "budget_usd",
          "budget_period", "token_quota", "quota_period", "expires_at", "enabled", "metadata")


class Conflict(GatewayError):
    status = 409
    code = "conflict"


# ---------------------------------------------------------------------------------------------- views


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def limits_view(limits: tuple[ModelLimit, ...]) -> dict[str, dict[str, int]]:
    return {m.pattern: {k: v for k, v in (("rpm", m.rpm), ("tpm", m.tpm)) if v is not None} for m in limits}


def client_view(c: Client) -> dict[str, Any]:
    """What the admin API and CLI show of a client: the key's hint, never the key or its hash."""
    return {
        "id": c.id, "name": c.name, "team": c.team, "models": list(c.models), "rpm": c.rpm, "tpm": c.tpm,
        "max_concurrent": c.max_concurrent, "model_limits": limits_view(c.model_limits),
        "budget_usd": c.budget_usd, "budget_period": c.budget_period, "token_quota": c.token_quota,
        "quota_period": c.quota_period, "expires_at": iso(c.expires_at), "enabled": c.enabled,
        "revoked": c.revoked_at is not None, "revoked_at": iso(c.revoked_at), "metadata": c.metadata,
        "source": c.source, "key_hint": c.key_hint, "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at), "last_used_at": iso(c.last_used_at),
    }


def audit_view(c: Client | None) -> dict | None:
    if c is None:
        return None
    view = client_view(c)
    view.pop("last_used_at")
    return {"client_id": c.id, **view}


# ---------------------------------------------------------------------------------------------- validation


def _bad(name: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid '{name}': {why}.", param=name)


def _limit(body: dict, name: str) -> int | None:
    v = body[name]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LIMIT:
        raise _bad(name, f"expected an integer from 1 to {MAX_LIMIT}, or null")
    return v


def _globs(v: object, name: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or len(v) > MAX_GLOBS:
        raise _bad(name, f"expected a list of at most {MAX_GLOBS} model names or globs")
    for g in v:
        if not isinstance(g, str) or not GLOB.fullmatch(g) or ".." in g:
            raise _bad(name, "each entry is a model name or glob (letters, digits, . - _ : / and * ? [ ] !)")
    return tuple(dict.fromkeys(v))


def parse_time(v: object, name: str = "expires_at") -> float | None:
    """An ISO-8601 date or date-time (no zone = UTC), or null."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith("Z") else v)
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    raise _bad(name, "expected an ISO-8601 date or date-time (e.g. 2027-01-31 or 2027-01-31T12:00:00Z),"
                     " or null")


def _model_limits(v: object) -> tuple[ModelLimit, ...]:
    name = "model_limits"
    if v is None:
        return ()
    if not isinstance(v, dict) or len(v) > MAX_GLOBS:
        raise _bad(name, 'expected an object {"<model glob>": {"rpm": N, "tpm": N}}')
    out = []
    for pattern, lim in v.items():
        _globs([pattern], f"{name}.{pattern}" if isinstance(pattern, str) and len(pattern) < 100 else name)
        if not isinstance(lim, dict) or not lim or set(lim) - {"rpm", "tpm"}:
            raise _bad(f"{name}.{pattern}", 'expected {"rpm": N, "tpm": N} (one or both)')
        rpm = _limit({"rpm": lim.get("rpm")}, "rpm") if "rpm" in lim else None
        tpm = _limit({"tpm": lim.get("tpm")}, "tpm") if "tpm" in lim else None
        out.append(ModelLimit(pattern, rpm, tpm))
    return tuple(out)


def validate(body: dict, *, partial: bool) -> dict[str, Any]:
    """The client fields of an admin request body, checked (400 naming the field); ``partial`` for PATCH."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}; a client has: {', '.join(FIELDS)}.",
                         param=unknown[0])
    if not partial and "name" not in body:
        raise BadRequest("Missing 'name'.", param="name", code="missing_required_parameter")
    out: dict[str, Any] = {}
    for f, v in body.items():
        if f == "name":
            if not isinstance(v, str) or not NAME.fullmatch(v):
                raise _bad(f, "1 to 64 letters, digits, '.', '_', '@' or '-',"
                              " starting with a letter or digit")
            out[f] = v
        elif f == "team":
            if v is not None and (not isinstance(v, str) or not 1 <= len(v) <= 64 or not v.isprintable()):
                raise _bad(f, "expected a string of 1 to 64 printable characters, or null")
            out[f] = v
        elif f == "models":
            out[f] = _globs(v, f)
        elif f in ("rpm", "tpm", "max_concurrent", "token_quota"):
            out[f] = _limit(body, f)
        elif f == "model_limits":
            out[f] = _model_limits(v)
        elif f == "budget_usd":
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                                  or not math.isfinite(v) or not 0 <= v <= 1e9):
                raise _bad(f, "expected a number of US dollars from 0 to 1e9, or null")
            out[f] = None if v is None else float(v)
        elif f in ("budget_period", "quota_period"):
            if v not in PERIODS:
                raise _bad(f, f"expected one of {', '.join(PERIODS)}")
            out[f] = v
        elif f == "expires_at":
            out[f] = parse_time(v)
        elif f == "enabled":
            if not isinstance(v, bool):
                raise _bad(f, "expected true or false")
            out[f] = v
        elif f == "metadata":
            if v is None:
                v = {}
            if not isinstance(v, dict) or len(orjson.dumps(v)) > MAX_METADATA_BYTES:
                raise _bad(f, f"expected a JSON object of at most {MAX_METADATA_BYTES} bytes")
            out[f] = v
    return out


# ---------------------------------------------------------------------------------------------- registry


class ClientRegistry:
    def __init__(self, store: KeyStore, clock: Callable[[], float],
                 on_change: Callable[[], None] | None = None) -> None:
        self.store, self.clock = store, clock
        self.on_change = on_change or (lambda: None)  # this worker reloads at once after its own change

    # --- reads ------------------------------------------------------------------------------------

    def list(self) -> list[Client]:
        with self.store.snapshot() as tx:
            return tx.clients()

    def get(self, cid: str) -> Client:
        with self.store.snapshot() as tx:
            c = tx.client(cid)
        if c is None:
            raise _not_found(cid)
        return c

    # --- changes ----------------------------------------------------------------------------------

    def create(self, body: dict, actor: str) -> tuple[Client, str]:
        fields = validate(body, partial=False)
        now = self.clock()
        key = new_key()
        client = Client(id=new_client_id(), source="runtime", key_hint=key_hint(key), created_at=now,
                        updated_at=now, **fields)
        with self.store.transaction() as tx:
            if tx.client_by_name(client.name) is not None:
                raise Conflict(f"A client named {client.name!r} exists already.", code="client_exists",
                               param="name")
            tx.insert_client(client)
            tx.add_client_key(key_hash(key), client.id, now)
            tx.add_audit(now, actor, "client_create", None, None, audit_view(client))
        self.on_change()
        return client, key

    def patch(self, cid: str, body: dict, actor: str) -> Client:
        fields = validate(body, partial=True)
        if not fields:
            raise BadRequest(f"Nothing to change; a client has: {', '.join(FIELDS)}.")
        now = self.clock()
        with self.store.transaction() as tx:
            before = self._changeable(tx, cid, "changed")
            if "name" in fields and fields["name"] != before.name and tx.client_by_name(fields["name"]):
                raise Conflict(f"A client named {fields['name']!r} exists already.", code="client_exists",
                               param="name")
            tx.update_client(cid, updated_at=now, **fields)
            after = tx.client(cid)
            tx.add_audit(now, actor, "client_update", None, audit_view(before), audit_view(after))
        self.on_change()
        assert after is not None
        return after

    def revoke(self, cid: str, actor: str) -> Client:
        """Every key of the client answers 401 "revoked" from now on (final; create a new client)."""
        now = self.clock()
        with self.store.transaction() as tx:
            before = self._changeable(tx, cid, "revoked", allow_revoked=True)
            if before.revoked_at is not None:
                return before
            tx.update_client(cid, revoked_at=now, enabled=False, updated_at=now)
            after = tx.client(cid)
            tx.add_audit(now, actor, "client_revoke", None, audit_view(before), audit_view(after))
        self.on_change()
        assert after is not None
        return after

    def rotate(self, cid: str, grace_s: float, actor: str) -> tuple[Client, str]:
        """A new key; the previous one(s) keep working ``grace_s`` seconds more (0: stop now)."""
        if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or not math.isfinite(grace_s) \
                or not 0 <= grace_s <= MAX_GRACE_S:
            raise _bad("grace_s", f"expected a number of seconds from 0 to {MAX_GRACE_S}")
        now = self.clock()
        key = new_key()
        with self.store.transaction() as tx:
            before = self._changeable(tx, cid, "rotated")
            tx.purge_client_keys(cid, now - ROTATED_KEPT_S)
            tx.expire_client_keys(cid, now + grace_s)
            tx.add_client_key(key_hash(key), cid, now)
            tx.update_client(cid, key_hint=key_hint(key), updated_at=now)
            after = tx.client(cid)
            tx.add_audit(now, actor, "client_rotate", None, audit_view(before),
                         {**(audit_view(after) or {}), "grace_s": grace_s})
        self.on_change()
        assert after is not None
        return after, key

    def _changeable(self, tx: KeyTx, cid: str, what: str, allow_revoked: bool = False) -> Client:
        c = tx.client(cid)
        if c is None:
            raise _not_found(cid)
        if c.source == "config":
            raise Conflict(f"Client {c.name!r} comes from the config file and cannot be {what} here: change "
                           "its entry under 'clients:' and reload.", code="config_client")
        if c.revoked_at is not None and not allow_revoked:
            raise Conflict(f"Client {c.name!r} was revoked and cannot be {what}; create a new client.",
                           code="client_revoked")
        return c

    # --- config clients (GitOps) ------------------------------------------------------------------

    def sync_config(self, clients: tuple[ClientConfig, ...]) -> None:
        """Make the store's config clients what the YAML says (hash only); disable the ones it dropped.
        Idempotent: every worker runs it at start-up; nothing is written when nothing changed."""
        now = self.clock()
        with self.store.transaction() as tx:
            existing = {c.id: c for c in tx.clients()}
            keys: dict[str, set[str]] = {}
            for digest, cid, _ in tx.client_keys():
                keys.setdefault(cid, set()).add(digest)
            wanted = set()
            for cc in clients:
                c = from_config(cc, now)
                wanted.add(c.id)
                old = existing.get(c.id)
                holder = next((o for o in existing.values() if o.name == c.name and o.id != c.id), None)
                if holder is not None:
                    log.error("config client %r not loaded: a runtime client (%s) has that name; rename one",
                              c.name, holder.id, extra={"event": "client_name_clash"})
                    continue
                digest = key_hash(cc.key)
                if old is None:
                    tx.insert_client(c)
                    tx.add_audit(now, "config", "client_create", None, None, audit_view(c))
                elif _config_fields(old) != _config_fields(c) or old.key_hint != c.key_hint:
                    changed = replace(c, created_at=old.created_at, last_used_at=old.last_used_at)
                    cols = (*FIELDS, "key_hint", "updated_at")
                    tx.update_client(c.id, **{f: getattr(changed, f) for f in cols})
                    tx.add_audit(now, "config", "client_update", None, audit_view(old), audit_view(changed))
                if keys.get(c.id) != {digest}:
                    tx.delete_client_keys(c.id, keep=digest)
                    tx.add_client_key(digest, c.id, now)
            for c in existing.values():
                if c.source == "config" and c.id not in wanted and c.enabled:
                    tx.update_client(c.id, enabled=False, updated_at=now)
                    tx.add_audit(now, "config", "client_disable", None, audit_view(c),
                                 {**(audit_view(replace(c, enabled=False)) or {}),
                                  "reason": "removed from config"})
        self.on_change()


def from_config(c: ClientConfig, now: float) -> Client:
    return replace(c.client, created_at=now, updated_at=now)


def _config_fields(c: Client) -> tuple:
    return tuple(getattr(c, f) for f in FIELDS) + (orjson.dumps(c.metadata, option=orjson.OPT_SORT_KEYS),)


def _not_found(cid: str) -> NotFound:
    return NotFound(f"No client with id {cid!r}. GET /admin/api/clients lists the clients.",
                    code="client_not_found")
