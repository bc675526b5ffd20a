"""Quota window arithmetic (proxy/keys/quota.py): plain functions on plain data."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from proxy.keys import quota
from proxy.keys.quota import Block, Limit, Usage

LA = "America/Los_Angeles"
NOW = datetime(2026, 3, 8, 12, 0, tzinfo=ZoneInfo(LA)).timestamp()  # the day DST starts in Los Angeles


def test_configured_limits_exact_then_globs_then_star():
    limits = {"gemini-2.5-flash": {"rpm": 10}, "gemini-*": {"rpm": 7, "rpd": 250}, "*": {"tpm": 1000}}
    assert quota.configured_for(limits, "gemini-2.5-flash") == {"rpm": 10, "rpd": 250, "tpm": 1000}
    assert quota.configured_for(limits, "gemini-2.5-pro") == {"rpm": 7, "rpd": 250, "tpm": 1000}
    assert quota.configured_for(limits, "gpt-4o") == {"tpm": 1000}
    assert quota.configured_for({}, "x") == {}


def test_configured_beats_learned_per_window():
    learned = {"rpm": Limit(5, "gemini_429", 1.0), "rpd": Limit(250, "gemini_429", 1.0)}
    merged = quota.merge({"rpm": 10}, learned)
    assert merged == {"rpm": Limit(10, "configured"), "rpd": Limit(250, "gemini_429", 1.0)}


def test_day_windows_follow_the_time_zone_across_dst():
    start = quota.day_start(NOW, LA)
    assert datetime.fromtimestamp(start, ZoneInfo(LA)) == datetime(2026, 3, 8, tzinfo=ZoneInfo(LA))
    end = quota.resets_at("rpd", Usage(), NOW, LA)
    assert end - start == 23 * 3600  # the DST day is 23 hours long


def test_blocks_say_which_window_is_full_and_when_it_frees():
    lims = {"rpm": Limit(5, "gemini_429", 0.0), "rpd": Limit(100, "configured")}
    assert quota.blocks(lims, Usage(minute_requests=4, oldest_at=NOW - 10, day_requests=50), NOW, LA) == []
    full = quota.blocks(lims, Usage(minute_requests=5, oldest_at=NOW - 10, day_requests=50), NOW, LA)
    assert full == [Block("rpm", 5, 5, NOW - 10 + quota.MINUTE_S, "gemini_429")]
    both = quota.blocks(lims, Usage(minute_requests=5, oldest_at=NOW - 10, day_requests=100), NOW, LA)
    assert [b.kind for b in both] == ["rpm", "rpd"]
    assert quota.soonest(both) == quota.resets_at("rpd", Usage(), NOW, LA)  # both must free up


def test_token_windows_block_once_spent():
    lims = {"tpm": Limit(1000, "configured")}
    assert quota.blocks(lims, Usage(minute_tokens=999, oldest_at=NOW), NOW, LA) == []
    assert quota.blocks(lims, Usage(minute_tokens=1000, oldest_at=NOW), NOW, LA)[0].kind == "tpm"


def test_scopes():
    assert quota.scope_of("gemini", "k_1", None) == "k:k_1"
    assert quota.scope_of("gemini", "k_1", "proj-a") == "p:gemini:proj-a"
