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
        return Verdict(False, "no secret in this worker (not in its config, or a runtime key its secret key "
                              "cannot decrypt)")
    reasons: list[str] = []
    waits: list[float] = []
    state, left = breaker.view(k.breaker, now, probe_timeout)
    if state == breaker.OPEN and left is not None:  # an open circuit always says how long
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


def diagnose(verdicts: Sequence[tuple[str, Verdict]]) -> list[dict]:
    """The per-key story (ids and reasons, operator text included): for the log and the admin API."""
    return [{"id": kid, "usable": v.usable, "reason": v.reason or "usable",
             "retry_after_s": None if v.wait_s is None else math.ceil(v.wait_s)} for kid, v in verdicts]


def no_key_error(provider: str, model: str, verdicts: Sequence[tuple[str, Verdict]]) -> NoKeyAvailable:
    """Cooling (429, retry after the soonest return) when a key that could still serve (enabled, valid,
    not already tried) is only waiting for a cooldown or a circuit with a known end; else 503 (nothing
    comes back by itself: disabled, invalid, retired, or every key already tried). The message tells the
    client no key id and no operator text; the diagnosis carries them for the log."""
    diagnosis = [{"provider": provider, "model": model, "keys": diagnose(verdicts)}]
    waiting = [v.wait_s for _, v in verdicts if v.wait_s is not None]
    if waiting:
        soonest = min(waiting)
        return NoKeyAvailable(
            f"every upstream key that can serve {model!r} is rate-limited or recovering; "
            f"retry in {max(1, math.ceil(soonest))}s", retry_after=soonest, diagnosis=diagnosis)
    return NoKeyAvailable(f"no upstream key can serve {model!r} right now", diagnosis=diagnosis)
