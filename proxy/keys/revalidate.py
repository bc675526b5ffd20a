"""Background revalidation: probe keys that went invalid, restore those that pass."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .admin import KeyAdmin
from .specs import Key

log = logging.getLogger("keyrelay.keys")


def revalidate_once(admin: KeyAdmin, probe: Callable[[Key], bool]) -> int:
    """Probe every key due now (claimed by this worker); returns how many were restored."""
    restored = 0
    for key in admin.due_for_revalidation():
        try:
            ok = bool(probe(key))
        except Exception as exc:  # a probe that blows up is a failed probe; never log the key itself
            log.warning("revalidation probe for %s failed: %s", key.id, type(exc).__name__)
            ok = False
        admin.record_probe(key.id, ok)
        restored += ok
    return restored


def run_revalidation(admin: KeyAdmin, probe: Callable[[Key], bool], stop: threading.Event,
                     interval: float) -> None:
    """Loop until ``stop`` is set, checking every ``interval`` seconds which keys are due
    (each key is probed at most every ``settings.revalidate_interval_s``)."""
    while not stop.is_set():
        try:
            revalidate_once(admin, probe)
        except Exception:
            log.exception("revalidation round failed")
        stop.wait(interval)
