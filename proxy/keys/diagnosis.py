"""Why a key can or cannot serve a request now, and the error when none can."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import NoKeyAvailable
from . import breaker
from .state import STATUS_INVALID, KeyState


@dataclass(frozen=True)
class Verdict:
    usable: bool
    reason: str | None = None  # None when usable
    wait_s: float | None = None  # set when blocked only temporarily (cooldown / open circuit)
    probe: bool = False  # usable only by claiming the half-open probe


def _left(s: float) -> str:
    return f"{math.ceil(s)}s left"


def judge(k: KeyState, cooldown_until: float | None, now: float, *, probe_timeout: float,
          excluded: bool = False, has_secret: bool = True) -> Verdict:
    """Usability of key ``k`` for one model (``cooldown_until`` is that model's cooldown, if any)."""
    if k.retired:
        return Verdict(False, "retired")
    if not k.enabled:
        return Verdict(False, f"disabled: {k.disabled_reason}" if k.disabled_reason else "disabled")
    if k.status == STATUS_INVALID:
        return Verdict(False, "invalid")
    if not has_secret:
        return Verdict(False, "not in this worker's config")
    reasons, waits = [], []
    state, left = breaker.view(k.breaker, now, probe_timeout)
    if state == breaker.OPEN:
        reasons.append(f"circuit_open ({_left(left)})")
        waits.append(left)
    elif state == breaker.HALF_OPEN and left is not None:
        reasons.append(f"half_open (probe in flight, {_left(left)})")
        waits.append(left)
    if cooldown_until is not None and cooldown_until > now:
        reasons.append(f"cooling_down ({_left(cooldown_until - now)})")
        waits.append(cooldown_until - now)
    if reasons:  # before "excluded": a key tried and then cooled down says when it is back
        return Verdict(False, "; ".join(reasons), max(waits))
    if excluded:
        return Verdict(False, "excluded (already tried)")
    return Verdict(True, probe=state == breaker.HALF_OPEN)


def no_key_error(provider: str, model: str, verdicts: Sequence[tuple[str, Verdict]]) -> NoKeyAvailable:
    """429 + Retry-After when the keys that could still serve (enabled, valid, not already tried)
    are all only waiting for a cooldown or a circuit with a known end; else 503 (nothing will come back
    by itself: disabled, invalid, retired, or every key already tried). Both carry the diagnosis."""
    details = {"provider": provider, "model": model,
               "keys": [{"id": kid, "reason": v.reason or "usable"} for kid, v in verdicts]}
    waiting = [v.wait_s for _, v in verdicts if v.wait_s is not None]
    if waiting:
        retry = max(1, math.ceil(min(waiting)))
        return NoKeyAvailable(
            f"all keys for {provider}/{model} are cooling down; retry in {retry}s",
            status=429, code="rate_limited", headers={"Retry-After": str(retry)}, details=details,
        )
    if not verdicts:
        msg = f"no keys configured for provider {provider!r}"
    else:
        msg = f"no usable key for {provider}/{model}"
    return NoKeyAvailable(msg, status=503, details=details)
