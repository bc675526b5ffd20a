"""Pure key-manager logic: breaker, health, cooldowns, selection, diagnosis, ids."""
from __future__ import annotations

import collections
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from proxy import errors
from proxy.keys import breaker, cooldown, scoring, selection
from proxy.keys.breaker import Breaker
from proxy.keys.diagnosis import judge, no_key_error
from proxy.keys.ids import ID_PATTERN, key_id, scrub
from proxy.keys.specs import KeySettings
from proxy.keys.state import KeyState

LA = "America/Los_Angeles"
BRK = dict(threshold=3, window=60.0, open_s=30.0)


def la(*args) -> float:
    return datetime(*args, tzinfo=ZoneInfo(LA)).timestamp()


# --- ids ------------------------------------------------------------------------------------------

def test_key_id_is_stable_short_and_secret_free():
    a = key_id("gemini", "AIzaSyA-very-secret")
    assert a == key_id("gemini", "AIzaSyA-very-secret")
    assert ID_PATTERN.match(a) and "secret" not in a
    assert a != key_id("openai", "AIzaSyA-very-secret") != key_id("gemini", "other")
    assert key_id("ollama", None) == key_id("ollama", None) != key_id("mock", None)
    assert key_id("ollama", None) != key_id("ollama", "")


def test_scrub_removes_secret_and_caps_length():
    assert scrub("401 for key sk-abc123 rejected", "sk-abc123") == "401 for key *** rejected"
    assert len(scrub("x" * 1000, None, limit=50)) == 50
    assert scrub(None, "s") is None


# --- breaker --------------------------------------------------------------------------------------

def test_breaker_opens_after_n_consecutive_failures_and_success_resets_count():
    b = Breaker()
    b = breaker.on_outcome(b, errors.TRANSIENT, 0, **BRK)
    b = breaker.on_outcome(b, errors.TRANSIENT, 1, **BRK)
    assert (b.state, b.failures) == ("closed", 2)
    b = breaker.on_outcome(b, errors.OK, 2, **BRK)
    assert (b.state, b.failures) == ("closed", 0)
    for t in (3, 4):
        b = breaker.on_outcome(b, errors.TRANSIENT, t, **BRK)
    assert b.state == "closed"
    b = breaker.on_outcome(b, errors.TRANSIENT, 5, **BRK)
    assert (b.state, b.open_until) == ("open", 35.0)


def test_breaker_failures_outside_window_do_not_accumulate():
    b = Breaker()
    for t in (0, 100, 200, 300):
        b = breaker.on_outcome(b, errors.TRANSIENT, t, **BRK)
    assert (b.state, b.failures) == ("closed", 1)


def test_breaker_quota_and_client_do_not_count():
    b = Breaker(failures=2, last_failure_at=0)
    for outcome in (errors.QUOTA, errors.CLIENT, errors.AUTH):
        assert breaker.on_outcome(b, outcome, 1, **BRK) == b


def test_breaker_half_open_probe_closes_on_success_reopens_on_failure():
    opened = Breaker("open", 30.0, 3, 0.0)
    assert breaker.view(opened, 10, 60) == ("open", 20.0)
    assert not breaker.claimable(opened, 29.9, 60)
    assert breaker.claimable(opened, 30.0, 60)
    probing = Breaker("half_open", 30.0, 3, 0.0, probe_at=31.0)  # what the pool's SQL claim writes
    assert breaker.view(probing, 31.0, 60)[0] == "half_open"
    assert not breaker.claimable(probing, 40.0, 60)  # exactly one probe in flight
    assert breaker.claimable(probing, 91.0, 60)  # a lost probe frees up after the probe timeout
    assert breaker.on_outcome(probing, errors.OK, 32, **BRK) == Breaker()
    assert breaker.on_outcome(probing, errors.QUOTA, 32, **BRK) == Breaker()  # upstream answered
    again = breaker.on_outcome(probing, errors.TRANSIENT, 32, **BRK)
    assert (again.state, again.open_until) == ("open", 62.0)


def test_breaker_open_ignores_late_results_of_requests_in_flight():
    opened = Breaker("open", 30.0, 3, 0.0)
    assert breaker.on_outcome(opened, errors.TRANSIENT, 5, **BRK) == opened
    assert breaker.on_outcome(opened, errors.OK, 5, **BRK) == opened


# --- health ---------------------------------------------------------------------------------------

def test_health_drops_on_failures_and_recovers_with_successes():
    h, at = 1.0, 0.0
    for t in range(5):
        h, at = scoring.observe(h, at, t, 0.0, half_life=1e9, alpha=0.2)
    assert h == pytest.approx(0.8 ** 5)
    low = h
    for t in range(5, 10):
        h, at = scoring.observe(h, at, t, 1.0, half_life=1e9, alpha=0.2)
    assert low < h < 1.0
    assert 1 - h == pytest.approx((1 - low) * 0.8 ** 5)


def test_health_old_badness_fades_with_half_life():
    assert scoring.current(0.2, 0.0, 300.0, 300.0) == pytest.approx(0.6)
    assert scoring.current(0.2, 0.0, 0.0, 300.0) == pytest.approx(0.2)
    assert scoring.current(0.2, 100.0, 50.0, 300.0) == pytest.approx(0.2)  # clock skew never inflates


def test_health_observation_per_outcome():
    assert scoring.observation(errors.OK, 100, 20000) == 1.0
    assert scoring.observation(errors.OK, 40000, 20000) == 0.5
    assert scoring.observation(errors.TRANSIENT, None, 20000) == 0.0
    for outcome in (errors.QUOTA, errors.AUTH, errors.CLIENT):
        assert scoring.observation(outcome, None, 20000) is None


# --- cooldowns ------------------------------------------------------------------------------------

def cd(now, **kw):
    args = dict(retry_after=None, daily=False, default_s=60.0, min_s=1.0, tz=LA) | kw
    return cooldown.cooldown_until(now, **args)


def test_cooldown_uses_fractional_retry_after_else_default():
    assert cd(1000.0, retry_after=34.4) == pytest.approx(1034.4)
    assert cd(1000.0) == 1060.0
    assert cd(1000.0, retry_after=0) == 1001.0  # a 0 still cools briefly
    assert cd(1000.0, retry_after=float("nan")) == 1060.0



def test_daily_reset_is_next_la_midnight():
    now = la(2024, 6, 1, 15, 30)
    assert cooldown.next_daily_reset(now, LA) == la(2024, 6, 2, 0, 0)
    assert cooldown.next_daily_reset(la(2024, 6, 1, 23, 59, 59), LA) - la(2024, 6, 1, 23, 59, 59) == 1
    assert cooldown.next_daily_reset(la(2024, 6, 2, 0, 0), LA) == la(2024, 6, 3, 0, 0)  # strictly after
    assert cd(now, daily=True) == la(2024, 6, 2, 0, 0)
    assert cd(now, daily=True, retry_after=30.0) == la(2024, 6, 2, 0, 0)


def test_daily_reset_across_dst_changes():
    # spring forward (2024-03-10): that LA day has 23 hours
    assert cooldown.next_daily_reset(la(2024, 3, 10, 12, 0), LA) - la(2024, 3, 10, 0, 0) == 23 * 3600
    assert cooldown.next_daily_reset(la(2024, 3, 9, 23, 30), LA) == datetime.fromisoformat(
        "2024-03-10T08:00:00+00:00").timestamp()
    # fall back (2024-11-03): 25 hours; 01:30 is ambiguous, both readings reset at 08:00 UTC on the 4th
    nov4 = datetime.fromisoformat("2024-11-04T08:00:00+00:00").timestamp()
    for fold in (0, 1):
        t = datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo(LA), fold=fold).timestamp()
        assert cooldown.next_daily_reset(t, LA) == nov4
    assert cooldown.next_daily_reset(la(2024, 11, 3, 0, 0), LA) - la(2024, 11, 3, 0, 0) == 25 * 3600


def test_reset_timezone_is_a_setting():
    s = KeySettings(provider_reset_tz={"other": "UTC"})
    assert s.reset_tz("gemini") == LA and s.reset_tz("other") == "UTC"
    t = datetime.fromisoformat("2024-06-01T10:00:00+00:00").timestamp()
    midnight = datetime.fromisoformat("2024-06-02T00:00:00+00:00").timestamp()
    assert cooldown.next_daily_reset(t, "UTC") == midnight
    with pytest.raises(ValueError, match="unknown time zone"):
        KeySettings(daily_reset_tz="Mars/Olympus")


# --- selection ------------------------------------------------------------------------------------

def test_smooth_wrr_spreads_exactly_by_weight_and_interleaves():
    cands = [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    state: dict[str, float] = {}
    picks = [selection.smooth_wrr(cands, state) for _ in range(600)]
    assert collections.Counter(picks) == {"a": 100, "b": 200, "c": 300}
    equal = [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    state = {}
    picks = [selection.smooth_wrr(equal, state) for _ in range(9)]
    assert picks == ["a", "b", "c"] * 3


def test_rotation_offset_changes_first_pick_per_worker():
    equal = [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    firsts = {selection.smooth_wrr(selection.rotate(equal, off), {}) for off in range(3)}
    assert firsts == {"a", "b", "c"}


def test_effective_weight_uses_health_with_floor():
    assert selection.effective_weight(2.0, 0.5, 0.05) == 1.0
    assert selection.effective_weight(2.0, 0.0, 0.05) == pytest.approx(0.1)


# --- diagnosis ------------------------------------------------------------------------------------

def test_judge_reasons():
    now = 1000.0
    ok = KeyState("k_0000000001", "gemini")
    assert judge(ok, None, now, probe_timeout=60).usable
    assert judge(KeyState("k", "g", retired=True), None, now, probe_timeout=60).reason == "retired"
    v = judge(KeyState("k", "g", enabled=False, disabled_reason="leaked"), None, now, probe_timeout=60)
    assert v.reason == "disabled: leaked" and v.wait_s is None
    assert judge(KeyState("k", "g", status="invalid"), None, now, probe_timeout=60).reason == "invalid"
    assert judge(ok, None, now, probe_timeout=60, excluded=True).reason == "excluded (already tried)"
    v = judge(KeyState("k", "g", breaker=Breaker("open", now + 11.5)), None, now, probe_timeout=60)
    assert (v.reason, v.wait_s) == ("circuit_open (12s left)", 11.5)
    v = judge(ok, now + 33.2, now, probe_timeout=60)
    assert (v.usable, v.reason, v.wait_s) == (False, "cooling_down (34s left)", pytest.approx(33.2))
    assert judge(ok, now - 1, now, probe_timeout=60).usable  # expired cooldown
    v = judge(KeyState("k", "g", breaker=Breaker("open", now - 1)), None, now, probe_timeout=60)
    assert v.usable and v.probe


def test_no_key_error_429_when_only_waiting():
    now = 0.0
    verdicts = [
        ("k_a", judge(KeyState("k_a", "g"), 34.4, now, probe_timeout=60)),
        ("k_b", judge(KeyState("k_b", "g", breaker=Breaker("open", 50.0)), None, now, probe_timeout=60)),
        ("k_c", judge(KeyState("k_c", "g", enabled=False, disabled_reason="leaked in CI logs"), None, now,
                      probe_timeout=60)),
    ]
    err = no_key_error("g", "m", verdicts)
    assert err.status == 429 and err.code == "all_keys_cooling" and err.cooling and err.retry_after == 34.4
    assert err.response_headers() == {"Retry-After": "35"}
    reasons = [k["reason"] for k in err.diagnosis[0]["keys"]]
    assert reasons == ["cooling_down (35s left)", "circuit_open (50s left)", "disabled: leaked in CI logs"]
    shown = str(err.openai_body()) + str(err.anthropic_body())  # what a client sees: no ids, no reasons
    assert "k_a" not in shown and "leaked" not in shown and "retry in 35s" in shown


def test_no_key_error_503_with_reasons_when_nothing_comes_back_by_itself():
    verdicts = [
        ("k_a", judge(KeyState("k_a", "g", status="invalid"), None, 0, probe_timeout=60)),
        ("k_b", judge(KeyState("k_b", "g"), None, 0, probe_timeout=60, excluded=True)),
    ]
    err = no_key_error("g", "m", verdicts)
    assert err.status == 503 and err.code == "no_usable_key" and not err.cooling
    assert "Retry-After" not in err.response_headers()
    assert err.diagnosis == [{"provider": "g", "model": "m", "keys": [
        {"id": "k_a", "usable": False, "reason": "invalid", "retry_after_s": None},
        {"id": "k_b", "usable": False, "reason": "excluded (already tried)", "retry_after_s": None}]}]
    assert "k_a" not in str(err.openai_body())
    assert no_key_error("nope", "m", []).status == 503
