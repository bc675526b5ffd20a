"""Quota-aware pacing in the key pool (proxy/keys/pacing.py) with an injected clock: configured and learned
limits, project scopes, PerDay parking, the explainable refusal, and a 3-minute load against the mock
upstream enforcing 5 rpm per key (accelerated: the pool, the store and the mock share one fake clock)."""
from __future__ import annotations

import math
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from proxy import relay as relay_module
from proxy.config import parse_config
from proxy.errors import OK, QUOTA, NoKeyAvailable
from proxy.keys import KeySettings, KeySpec, key_id
from proxy.keys.learn import GEMINI_429, HEADERS, Learned
from proxy.keys.quota import MINUTE_S
from proxy.relay import Relay, Trace
from tests.mock_upstream import MockUpstream, QuotaLimiter
from tests.unit.keys_support import SECRETS, Clock, make_pool

LA = "America/Los_Angeles"
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo(LA)).timestamp()
MIDNIGHT = datetime(2026, 12, 1, tzinfo=ZoneInfo(LA)).timestamp()
MODEL = "gemini-2.5-flash"
GEMINI = [KeySpec("gemini", s, label=f"g{i}") for i, s in enumerate(SECRETS)]


def settings(**kw) -> KeySettings:
    return KeySettings(refresh_interval_s=0.0, flush_interval_s=0.05, daily_reset_tz=LA, **kw)


def ids(pool) -> list[str]:
    return [k["id"] for k in pool.describe()]


def test_configured_limits_pace_from_the_first_request_and_the_refusal_says_when(any_database):
    clock = Clock(NOON)
    with make_pool(any_database, clock, settings(quota_limits={"gemini": {"*": {"rpm": 2}}}),
                   specs=GEMINI, start_flusher=False) as pool:
        got = [pool.acquire("gemini", MODEL).id for _ in range(6)]
        assert sorted(got) == sorted(ids(pool) * 2)  # every key exactly twice
        clock.t += 10
        with pytest.raises(NoKeyAvailable) as e:
            pool.acquire("gemini", MODEL)
        err = e.value
        assert err.status == 429 and err.retry_after == pytest.approx(MINUTE_S - 10)
        assert err.response_headers()["Retry-After"] == str(math.ceil(MINUTE_S - 10))
        keys = err.details["keys"]
        assert [k["key"] for k in keys] == [1, 2, 3]
        assert all(k["limits"]["rpm"] == {"limit": 2, "used": 2, "resets_at": pytest.approx(NOON + MINUTE_S)}
                   for k in keys)
        assert not any(s in str(err.details) for s in SECRETS) and "k_" not in str(err.details)
        # another model has no configured limit of its own but "*" covers it; the window rolls
        clock.t = NOON + MINUTE_S + 0.1
        assert pool.acquire("gemini", MODEL)
        view = pool.describe()[0]["limits"][MODEL]["rpm"]
        assert view["source"] == "configured" and view["limit"] == 2


def test_a_learned_limit_replaces_the_old_one_and_a_429_counts_the_window_spent(any_database):
    clock = Clock(NOON)
    with make_pool(any_database, clock, settings(), specs=GEMINI[:1], start_flusher=False) as pool:
        (kid,) = ids(pool)
        pool.acquire("gemini", MODEL)
        pool.record(kid, MODEL, QUOTA, retry_after=20, limits=[Learned("rpm", 5, GEMINI_429, MODEL, used=5)])
        rpm = pool.get(kid)["limits"][MODEL]["rpm"]
        assert rpm == {"limit": 5, "used": 5, "resets_at": pytest.approx(NOON + MINUTE_S),
                       "source": GEMINI_429, "learned_at": NOON}
        clock.t += 21  # the cooldown is over, the minute is still spent
        with pytest.raises(NoKeyAvailable) as e:
            pool.acquire("gemini", MODEL)
        assert e.value.retry_after == pytest.approx(MINUTE_S - 21)
        clock.t = NOON + MINUTE_S + 0.1
        assert [pool.acquire("gemini", MODEL).id for _ in range(5)] == [kid] * 5
        with pytest.raises(NoKeyAvailable):
            pool.acquire("gemini", MODEL)
        clock.t += 1
        pool.record(kid, MODEL, OK, limits=[Learned("rpm", 4, HEADERS)])  # a later, different value
        rpm = pool.get(kid)["limits"][MODEL]["rpm"]
        assert (rpm["limit"], rpm["source"], rpm["learned_at"]) == (4, HEADERS, clock.t)


def test_keys_of_one_project_count_together_and_share_learned_limits(any_database):
    clock = Clock(NOON)
    specs = [KeySpec("gemini", SECRETS[0], project="proj-a"), KeySpec("gemini", SECRETS[1], project="proj-a"),
             KeySpec("gemini", SECRETS[2])]
    with make_pool(any_database, clock, settings(), specs=specs, start_flusher=False) as pool:
        project = [key_id("gemini", SECRETS[0]), key_id("gemini", SECRETS[1])]
        solo = key_id("gemini", SECRETS[2])
        pool.record(project[0], MODEL, OK, limits=[Learned("rpm", 4, HEADERS)])  # learned on one key
        assert pool.get(project[1])["limits"][MODEL]["rpm"]["limit"] == 4  # ...shared by the other
        assert pool.get(solo)["limits"] == {}
        got = []
        for _ in range(8):
            try:
                got.append(pool.acquire("gemini", MODEL, exclude=frozenset({solo})).id)
            except NoKeyAvailable:
                break
        assert len(got) == 4 and set(got) == set(project)  # 4 requests for the project, over both keys
        assert pool.get(project[0])["limits"][MODEL]["rpm"]["used"] == 4
        assert pool.get(project[1])["limits"][MODEL]["rpm"]["used"] == 4
        assert pool.acquire("gemini", MODEL).id == solo  # another project's key is not affected
        # a 429 on one key of the project cools the whole project for that model
        pool.record(project[0], MODEL, QUOTA, retry_after=30)
        assert all(MODEL in pool.get(k)["cooldowns"] for k in project)
        assert MODEL not in pool.get(solo)["cooldowns"]


def test_a_per_day_429_parks_the_key_for_that_model_until_midnight(any_database):
    clock = Clock(NOON)
    with make_pool(any_database, clock, settings(), specs=GEMINI[:1], start_flusher=False) as pool:
        (kid,) = ids(pool)
        pool.acquire("gemini", "gemini-2.5-pro")
        pool.record(kid, "gemini-2.5-pro", QUOTA, retry_after=29, daily=True,
                    limits=[Learned("rpd", 2, GEMINI_429, "gemini-2.5-pro", used=2)])
        assert pool.get(kid)["cooldowns"]["gemini-2.5-pro"] == pytest.approx(MIDNIGHT - NOON, abs=0.1)
        clock.t += 30  # the 29 s retryDelay is long past
        with pytest.raises(NoKeyAvailable) as e:
            pool.acquire("gemini", "gemini-2.5-pro")
        assert e.value.retry_after == pytest.approx(MIDNIGHT - clock.t, abs=0.1)
        assert pool.acquire("gemini", MODEL).id == kid  # other models on the key keep working
        assert pool.get(kid)["limits"]["gemini-2.5-pro"]["rpd"]["used"] == 2
        clock.t = MIDNIGHT + 1
        assert pool.acquire("gemini", "gemini-2.5-pro").id == kid  # a new day
        assert pool.get(kid)["limits"]["gemini-2.5-pro"]["rpd"]["used"] == 1


def test_pacing_off_admits_everything(any_database):
    clock = Clock(NOON)
    s = settings(pacing=False, quota_limits={"gemini": {"*": {"rpm": 1}}})
    with make_pool(any_database, clock, s, specs=GEMINI[:1], start_flusher=False) as pool:
        assert len([pool.acquire("gemini", MODEL) for _ in range(5)]) == 5


# ------------------------------------------------------------------------------------------------- load


class FakeTime:
    """``proxy.relay``'s view of the time module: the relay's pauses advance the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.monotonic = time.monotonic

    def sleep(self, seconds: float) -> None:
        self.clock.t += seconds


def run_load(tmp_path, monkeypatch, *, pacing: bool) -> tuple[list[dict], list[int], list[dict]]:
    """12 requests per minute for 3 minutes (one every 5 s of fake time) over three keys weighted 4:1:1,
    through the real relay, adapter and HTTP to the mock upstream enforcing 5 rpm per key."""
    clock = Clock(NOON)
    monkeypatch.setattr(relay_module, "time", FakeTime(clock))
    limiter = QuotaLimiter(rpm=5, clock=clock)
    with MockUpstream() as mock:
        mock.quota = limiter
        config = parse_config({
            "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta",
                           "keys": [{"key": SECRETS[0], "weight": 4}, SECRETS[1], SECRETS[2]]}],
            "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": MODEL}]}],
        })
        specs = [KeySpec("gemini", k.key, k.weight) for k in config.providers[0].keys]
        with make_pool(tmp_path / f"load-{pacing}.db", clock, settings(pacing=pacing), specs=specs,
                       start_flusher=False) as pool:
            relay = Relay(config, pool)
            statuses = []
            for i in range(36):
                clock.t = max(clock.t, NOON + 5 * i)
                try:
                    relay.chat({"model": "flash", "messages": [{"role": "user", "content": "hi"}]}, Trace())
                    statuses.append(200)
                except NoKeyAvailable as exc:
                    statuses.append(exc.status)
            return limiter.refused, statuses, pool.describe()


def test_three_minutes_at_12_rpm_cause_one_429_per_key_at_most(tmp_path, monkeypatch):
    refused, statuses, keys = run_load(tmp_path, monkeypatch, pacing=True)
    assert statuses == [200] * 36  # no client error
    per_key = [sum(1 for r in refused if r["key"] == s) for s in SECRETS]
    assert max(per_key) == 1 and sum(per_key) >= 1  # learning happened, and only once per key
    learned = [k["limits"][MODEL]["rpm"] for k in keys if k["limits"]]
    assert learned and all(r["limit"] == 5 and r["source"] == GEMINI_429 for r in learned)
    after_first = [r for r in refused if r["at"] > min(x["at"] for x in refused)]
    assert len(after_first) == sum(per_key) - 1


def test_without_pacing_the_same_load_keeps_hitting_the_limit(tmp_path, monkeypatch):
    refused, _, _ = run_load(tmp_path, monkeypatch, pacing=False)
    per_key = [sum(1 for r in refused if r["key"] == s) for s in SECRETS]
    assert max(per_key) > 1  # the control: what pacing prevents


def test_two_workers_leasing_slices_never_pass_a_limit_together(any_database):
    clock = Clock(NOON)
    s = settings(quota_limits={"gemini": {MODEL: {"rpm": 50, "rpd": 1000}}})
    db = any_database
    with make_pool(db, clock, s, specs=GEMINI[:1], start_flusher=False) as a, \
            make_pool(db, clock, s, specs=GEMINI[:1], start_flusher=False) as b:
        admitted, refused = 0, set()
        while len(refused) < 2:
            for name, pool in (("a", a), ("b", b)):
                if name in refused:
                    continue
                try:
                    pool.acquire("gemini", MODEL)
                    admitted += 1
                except NoKeyAvailable:
                    refused.add(name)
        assert admitted == 50  # every reserved slice used, none passed the limit
        assert a.describe()[0]["limits"][MODEL]["rpm"]["used"] == 50


def test_slices_grow_under_load_and_what_they_did_not_use_goes_back_to_the_day(any_database, monkeypatch):
    clock = Clock(NOON)
    s = settings(quota_limits={"gemini": {MODEL: {"rpm": 10**6, "rpd": 10**6}}})
    with make_pool(any_database, clock, s, specs=GEMINI[:1], start_flusher=False) as pool:
        leases = []
        real = pool.store.transaction

        def counting(*args, **kw):
            leases.append(1)
            return real(*args, **kw)

        monkeypatch.setattr(pool.store, "transaction", counting)
        for _ in range(1000):
            pool.acquire("gemini", MODEL)
        assert len(leases) < 20  # 1, 2, 4, ... 256, 256, ...: a transaction per slice, not per request
        monkeypatch.undo()
        used = pool.describe()[0]["limits"][MODEL]["rpd"]["used"]
        assert 1000 <= used < 1000 + 256
        clock.t += 3  # idle: the slice expired; the flush gives the day back what it did not use
        assert pool.describe()[0]["limits"][MODEL]["rpd"]["used"] == 1000
        pool.acquire("gemini", MODEL)  # a slice of 1 again
        assert pool.describe()[0]["limits"][MODEL]["rpd"]["used"] == 1001


def test_tokens_count_against_a_token_window(any_database):
    clock = Clock(NOON)
    s = settings(quota_limits={"gemini": {MODEL: {"tpm": 1000}}})
    with make_pool(any_database, clock, s, specs=GEMINI[:1], start_flusher=False) as pool:
        kid = pool.acquire("gemini", MODEL).id
        pool.record(kid, MODEL, OK, tokens=600)
        pool.flush()
        kid = pool.acquire("gemini", MODEL).id
        pool.record(kid, MODEL, OK, tokens=400)
        pool.flush()
        with pytest.raises(NoKeyAvailable) as e:
            pool.acquire("gemini", MODEL)
        assert e.value.details["keys"][0]["limits"]["tpm"] == {
            "limit": 1000, "used": 1000, "resets_at": pytest.approx(math.ceil(NOON) + MINUTE_S)}


def test_the_refusal_of_several_targets_lists_every_key():
    a = NoKeyAvailable("a", retry_after=30)
    a.details = {"keys": [{"provider": "p1", "key": 1, "resets_at": NOON + 30}]}
    b = NoKeyAvailable("b", retry_after=10)
    b.details = {"keys": [{"provider": "p2", "key": 1, "resets_at": NOON + 10}]}
    merged = relay_module._merge_no_key([a, b, NoKeyAvailable("all invalid")])
    assert merged.status == 429 and merged.retry_after == 10
    assert [k["provider"] for k in merged.details["keys"]] == ["p1", "p2"]
    assert merged.openai_body()["error"]["details"] == merged.details
    assert merged.anthropic_body()["error"]["details"] == merged.details
