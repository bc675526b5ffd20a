"""The relay's pause between rounds (issue 6): backoff with full jitter, or a short cooldown, or give up."""
from __future__ import annotations

import random

from proxy.config import RetryConfig
from proxy.errors import NoKeyAvailable
from proxy.relay import _pause

RETRY = RetryConfig(backoff_base_s=0.1, backoff_cap_s=0.5, retry_after_cap_s=5)


def cooling(seconds: int) -> NoKeyAvailable:
    return NoKeyAvailable("cooling", retry_after=seconds)


def test_backoff_after_transient_failures_is_full_jitter_under_a_growing_cap():
    random.seed(6)
    for round_no, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        pauses = [_pause(RETRY, round_no, True, []) for _ in range(300)]
        assert all(0 <= p <= cap for p in pauses)
        assert max(pauses) > cap * 0.9 and min(pauses) < cap * 0.1  # the whole [0, cap] range is used


def test_cooldown_wait_is_the_soonest_and_only_within_the_cap():
    assert _pause(RETRY, 1, False, [cooling(3), cooling(2)]) == 2
    assert _pause(RETRY, 1, False, [cooling(30), cooling(2)]) == 2  # one target back soon is enough
    assert _pause(RETRY, 1, False, [cooling(30)]) is None  # the client gets 429 + Retry-After instead


def test_nothing_to_wait_for_gives_up():
    invalid = NoKeyAvailable("all invalid")
    assert _pause(RETRY, 1, False, [invalid]) is None
    assert _pause(RETRY, 1, False, []) is None
