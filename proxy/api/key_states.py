"""What the dashboard shows of a key: one truthful state, and the pool's "can it serve?" summary.

``state_of`` is pure: it turns a key's admin view (``KeyPool._public`` plus ``disabled_by``) into one
state, the first that applies: ``retired``, ``disabled`` (by whom, when, why), ``invalid`` (since when,
why), ``circuit_open`` (until when), ``half_open`` (its single probe in flight or due), ``cooling``
(usable for other models; which models until when), else ``usable``. ``/admin/api/keys`` adds these
fields to each key and a ``summary``: per provider and model the usable keys and the soonest recovery.
Times are epoch seconds; the page renders them in the browser's local time.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.app import Gateway

STATES = ("usable", "cooling", "half_open", "circuit_open", "invalid", "disabled", "retired")


def state_of(k: dict, now: float) -> dict[str, Any]:
    """``{"state", "state_reason", "state_until", "state_models"}`` for one key view."""
    out: dict[str, Any] = {"state_reason": None, "state_until": None, "state_models": {}}
    cooling = {m: u for m, u in (k.get("cooldowns_until") or {}).items() if u > now}
    if k.get("retired"):
        out["state"] = "retired"
    elif not k.get("enabled", True):
        out.update(state="disabled", state_reason=k.get("disabled_reason"))
    elif k.get("status") == "invalid":
        out.update(state="invalid", state_reason=k.get("status_reason"))
    elif k.get("circuit") == "open":
        out.update(state="circuit_open", state_until=k.get("circuit_until"))
    elif k.get("circuit") == "half_open":
        out.update(state="half_open", state_until=k.get("circuit_until"))
    elif cooling:
        out.update(state="cooling", state_until=min(cooling.values()), state_models=cooling)
    else:
        out["state"] = "usable"
    if out["state"] != "cooling":
        out["state_models"] = cooling  # a disabled or open key may be cooling too: still said
    return out


def annotate(keys: list[dict], gw: Gateway) -> list[dict]:
    """Each key view with its state and who disabled it (the last ``disable`` in the audit)."""
    with gw.pool.store.snapshot() as tx:
        disabled = tx.last_actions("disable")
    now = time.time()
    out = []
    for k in keys:
        who = disabled.get(k["id"]) if not k.get("enabled", True) else None
        out.append({**k, **state_of(k, now), "disabled_by": who["actor"] if who else None,
                    "disabled_at": who["at"] if who else None})
    return out


def targets(gw: Gateway) -> list[tuple[str, str]]:
    """Every (provider, upstream model) the config names: models' targets, then providers' ``models``."""
    pairs = [(t.provider, t.model) for m in gw.config.models for t in m.targets]
    pairs += [(p.name, m) for p in gw.config.providers for m in p.models]
    return list(dict.fromkeys(pairs))


def summary(gw: Gateway) -> list[dict]:
    """Per provider and model: keys usable now out of the provider's active keys, and the soonest
    return of one that is only waiting (cooldown or open circuit), in seconds and as a time."""
    now = time.time()
    out = []
    for provider, model in targets(gw):
        verdicts = [v for v in gw.pool.diagnose(provider, model) if v["reason"] != "retired"]
        waits = [v["retry_after_s"] for v in verdicts if not v["usable"] and v["retry_after_s"] is not None]
        soonest = min(waits) if waits else None
        out.append({"provider": provider, "model": model, "usable": sum(1 for v in verdicts if v["usable"]),
                    "keys": len(verdicts), "soonest_recovery_s": soonest,
                    "soonest_recovery_at": None if soonest is None else now + soonest})
    return out
