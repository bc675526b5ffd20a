"""Operator actions on keys, the audit log and snapshots: each change and its audit row in one store
transaction, after which the pool reloads what changed (other workers notice the commit themselves).

Kept apart from ``KeyPool`` (the per-request view): nothing here is on the request path, and every
call may wait (cooperatively, at most the store's lock wait) for the database, then raise
``StoreUnavailable``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from ..store.base import KeyStore, KeyTx, StoreUnavailable
from . import snapshot
from .pool import KeyPool, check_weight, log_key_state
from .specs import Key
from .state import STATUS_INVALID, STATUS_OK

log = logging.getLogger("keyrelay.keys")

Change = Callable[[KeyTx, float], object]


def audit_view(tx: KeyTx, kid: str, now: float) -> dict | None:
    """What an audit row records of a key before and after a change (no counters, no secrets)."""
    st = tx.key(kid)
    if st is None:
        return None
    b = st.breaker
    return {"enabled": st.enabled, "disabled_reason": st.disabled_reason, "status": st.status,
            "weight": st.weight, "circuit": b.state, "open_until": b.open_until, "failures": b.failures,
            "health": round(st.health, 4), "cooldowns": tx.cooldowns(kid, now)}


class KeyAdmin:
    def __init__(self, pool: KeyPool, store: KeyStore | None = None) -> None:
        self.pool = pool
        self.store = store or pool.store

    # --- operator changes (KeyError for an unknown id) ------------------------------------------

    def enable(self, key_id: str, actor: str) -> None:
        self._change(key_id, actor, "enable", lambda tx, now: tx.update(
            key_id, enabled=True, disabled_reason=None))

    def disable(self, key_id: str, reason: str, actor: str) -> None:
        self._change(key_id, actor, "disable", lambda tx, now: tx.update(
            key_id, enabled=False, disabled_reason=reason or None))
        key = self.pool.get(key_id) or {}
        log_key_state(key_id, key.get("label"), key.get("provider", "?"), None, "disabled",
                      f"by {actor}" + (f": {reason}" if reason else ""))

    def set_weight(self, key_id: str, weight: float, actor: str) -> None:
        w = check_weight(weight)
        self._change(key_id, actor, "set_weight", lambda tx, now: tx.update(key_id, weight_override=w))

    def reset(self, key_id: str, actor: str) -> None:
        """Close the circuit, clear cooldowns and invalid status, health back to 1."""
        def apply(tx: KeyTx, now: float) -> None:
            tx.update(key_id, circuit="closed", open_until=None, failures=0, last_failure_at=None,
                      probe_at=None, status=STATUS_OK, status_reason=None, status_at=now, health=1.0,
                      health_at=now)
            tx.replace_cooldowns(key_id, {})
        self._change(key_id, actor, "reset", apply,
                     before_reload=lambda: self.pool.forget_observations(key_id))

    def revalidate(self, key_id: str, actor: str) -> None:
        """Ask for a probe of an invalid key at the next revalidation round."""
        self._change(key_id, actor, "revalidate", lambda tx, now: tx.update(key_id, last_probe_at=None))

    def audit_event(self, actor: str, action: str, before: dict | None = None,
                    after: dict | None = None) -> None:
        """Audit an operator action that concerns no single key (e.g. a config reload)."""
        with self.store.transaction() as tx:
            tx.add_audit(self.pool.clock(), actor, action, None, before, after)

    def audit(self, limit: int = 100) -> list[dict]:
        with self.store.snapshot() as tx:
            return tx.audit(limit)

    def _change(self, kid: str, actor: str, action: str, apply: Change,
                before_reload: Callable[[], None] | None = None) -> None:
        now = self.pool.clock()
        with self.store.transaction() as tx:
            before = audit_view(tx, kid, now)
            if before is None:
                raise KeyError(kid)
            apply(tx, now)
            tx.add_audit(now, actor, action, kid, before, audit_view(tx, kid, now))
        if before_reload is not None:
            before_reload()
        self.pool.reload_key(kid)

    # --- revalidation of invalid keys -----------------------------------------------------------

    def due_for_revalidation(self) -> list[Key]:
        """Invalid keys whose probe is due, each claimed for this worker (no two workers probe one key)."""
        now = self.pool.clock()
        due_before = now - self.pool.settings.revalidate_interval_s
        claimed = []
        for kid in self.pool.revalidation_candidates():
            try:
                with self.store.transaction() as tx:
                    won = tx.claim_revalidation(kid, now, due_before)
            except StoreUnavailable as exc:
                log.warning("revalidation claim for %s failed: %s", kid, exc)
                continue
            if won:
                self.pool.reload_key(kid)
                claimed.append(kid)
        return [k for k in map(self.pool.key, claimed) if k is not None]

    def record_probe(self, key_id: str, ok: bool) -> None:
        """Result of a revalidation probe: a pass restores an invalid key to ``ok``."""
        now = self.pool.clock()

        def fn(tx: KeyTx) -> None:
            tx.update(key_id, last_probe_at=now)
            if ok and tx.mark_valid(key_id, now):
                tx.add_audit(now, "system", "revalidated", key_id, {"status": STATUS_INVALID},
                             {"status": STATUS_OK})
        if self.pool.knows(key_id):
            self.pool.write(fn, key_id)

    # --- snapshot -------------------------------------------------------------------------------

    def export_snapshot(self) -> dict:
        self.pool.flush()
        now = self.pool.clock()
        with self.store.snapshot() as tx:
            keys, cds = tx.keys(), tx.all_cooldowns(now)
        return snapshot.document([snapshot.entry(k, cds.get(k.id, {})) for k in keys], now)

    def import_snapshot(self, doc: dict, actor: str) -> None:
        """Validate the whole document, then apply it in one transaction (all or nothing).

        Keys absent from the document are left as they are; keys unknown to this database are
        inserted as retired (their secret is not known until config names them).
        """
        now = self.pool.clock()
        entries = snapshot.validate(doc, now=now, max_cooldown_s=self.pool.settings.max_cooldown_s)
        with self.store.transaction() as tx:
            known = {k.id: k.provider for k in tx.keys()}
            for i, e in enumerate(entries):
                if e["id"] in known and known[e["id"]] != e["provider"]:
                    raise snapshot.SnapshotError(
                        f"keys[{i}]: key {e['id']} belongs to provider {known[e['id']]!r} here, "
                        f"not {e['provider']!r}")
            for e in entries:
                self._import_entry(tx, e, known, now, actor)
        self.pool.discard_pending([e["id"] for e in entries])
        self.pool.reload()

    def _import_entry(self, tx: KeyTx, e: dict, known: dict[str, str], now: float, actor: str) -> None:
        kid = e["id"]
        before = None
        if kid in known:
            before = audit_view(tx, kid, now)
        else:
            tx.insert_retired(kid, e["provider"], e["label"], e["weight"] if e["weight"] > 0 else 1.0, now)
        c, n = e["circuit"], e["counters"]
        tx.update(kid, weight_override=e["weight_override"], enabled=e["enabled"],
                  disabled_reason=e["disabled_reason"], status=e["status"], status_reason=e["status_reason"],
                  status_at=e["status_at"], circuit=c["state"], open_until=c["open_until"],
                  failures=c["failures"], last_failure_at=c["last_failure_at"], probe_at=c["probe_at"],
                  health=e["health"], health_at=e["health_at"], requests=n["requests"], errors=n["errors"],
                  latency_ms_total=n["latency_ms_total"], latency_samples=n["latency_samples"],
                  last_error=e["last_error"], last_error_at=e["last_error_at"],
                  last_used_at=e["last_used_at"], last_probe_at=e["last_probe_at"])
        tx.replace_cooldowns(kid, e["cooldowns"])
        tx.add_audit(now, actor, "import", kid, before, audit_view(tx, kid, now))
