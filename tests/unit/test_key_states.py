"""One truthful state per key (proxy/api/key_states.py), from the admin view of a key."""
from __future__ import annotations

from proxy.api.key_states import state_of

NOW = 1_000_000.0
BASE = {"enabled": True, "status": "ok", "circuit": "closed", "cooldowns_until": {}, "retired": False}


def test_the_first_state_that_applies_wins_and_cooldowns_are_always_said():
    assert state_of(BASE, NOW)["state"] == "usable"
    cooling = state_of({**BASE, "cooldowns_until": {"m2": NOW + 90, "m1": NOW + 30, "old": NOW - 1}}, NOW)
    assert cooling["state"] == "cooling" and cooling["state_until"] == NOW + 30
    assert cooling["state_models"] == {"m2": NOW + 90, "m1": NOW + 30}  # the expired one is gone
    opened = state_of({**BASE, "circuit": "open", "circuit_until": NOW + 60,
                       "cooldowns_until": {"m": NOW + 5}}, NOW)
    assert (opened["state"], opened["state_until"], opened["state_models"]) == ("circuit_open", NOW + 60,
                                                                               {"m": NOW + 5})
    invalid = state_of({**BASE, "status": "invalid", "status_reason": "API key not valid",
                        "circuit": "open"}, NOW)
    assert (invalid["state"], invalid["state_reason"]) == ("invalid", "API key not valid")
    disabled = state_of({**BASE, "enabled": False, "disabled_reason": "billing", "status": "invalid"}, NOW)
    assert (disabled["state"], disabled["state_reason"]) == ("disabled", "billing")
    assert state_of({**BASE, "retired": True, "enabled": False}, NOW)["state"] == "retired"
    assert state_of({**BASE, "circuit": "half_open"}, NOW)["state"] == "half_open"
