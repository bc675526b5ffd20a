"""Key history: the pure rollup / percentile logic and the SQL on both store backends (a real
SQLite file, a real PostgreSQL database)."""
from __future__ import annotations

import pytest

from proxy.keys import history as h
from proxy.keys import history_jobs
from proxy.keys.pool import KeyPool
from proxy.keys.specs import KeySettings, KeySpec


def test_percentile_interpolates_inside_the_bucket_and_is_clipped_by_the_max():
    samples = (0, 9.9, 10, 19, 50, 59_999, 60_000, 1e9)
    assert [h.latency_bucket(x) for x in samples] == [0, 0, 1, 1, 3, 11, 12, 12]
    hist = [0] * h.BUCKETS
    hist[h.latency_bucket(150)] = 100  # 100..200 ms
    assert h.percentile(hist, 0.5, max_ms=200) == 150.0
    assert h.percentile(hist, 0.95, max_ms=180) == pytest.approx(100 + 80 * 0.95, abs=0.1)
    assert h.percentile(hist, 0.5, max_ms=200, min_ms=180) == 190.0  # narrowed to what was seen
    assert h.percentile([0] * h.BUCKETS, 0.5) is None
    hist = [0] * h.BUCKETS
    hist[-1] = 2  # the open bucket ends at the max
    assert h.percentile(hist, 1.0, max_ms=90_000) == 90_000.0


def test_buffer_rolls_up_by_minute_and_hour():
    buf = h.HistoryBuffer()
    t = 7200.0 + 59  # minute 120, hour 2
    buf.add(t, "k1", "p", "m", "ok", latency_ms=120, status=200, tokens=30)
    buf.add(t + 1, "k1", "p", "m", "quota", latency_ms=5, status=429)
    buf.add(t + 2, "k1", "p", "m", "transient", status=None)
    rows, _ = buf.take()
    by = {(r.step, r.bucket): r for r in rows}
    minute, next_minute, hour = by[(60, 7200)], by[(60, 7260)], by[(3600, 7200)]
    assert (minute.requests, minute.outcomes["ok"], minute.tokens, minute.latency_n) == (1, 1, 30, 1)
    assert (next_minute.requests, next_minute.http_429, next_minute.outcomes["transient"]) == (2, 1, 1)
    assert hour.requests == 3 and hour.http_429 == 1 and hour.latency_n == 1  # latency of ok attempts only


def test_plan_chooses_a_resolution_and_refuses_the_impossible():
    assert h.plan(86400, 300) == h.MINUTE
    assert h.plan(7 * 86400, 3600) == h.HOUR
    assert h.plan(86400, 60) == h.MINUTE
    for window, step in ((31 * 86400, 3600), (86400, 30), (7 * 86400, 300), (3600, 7200)):
        with pytest.raises(ValueError):
            h.plan(window, step)
    with pytest.raises(ValueError, match="'window'"):
        h.parse_duration("24 hours", "window")


def test_merge_periods_joins_overlaps_of_the_same_key_and_model():
    ps = [h.Period("k", "cooldown", "m", 10, 20), h.Period("k", "cooldown", "m", 15, 30),
          h.Period("k", "cooldown", "m", 40, 50), h.Period("k", "circuit_open", "", 0, 5)]
    out = h.merge_periods(ps, 2, 45)
    assert [(p["kind"], p["start"], p["until"]) for p in out] == [
        ("circuit_open", 0, 5), ("cooldown", 10, 30), ("cooldown", 40, 50)]


@pytest.fixture
def store(any_store):
    return any_store


def test_two_pools_add_up_in_the_store_and_pruning_keeps_the_retention(store, tmp_path):
    clock = [1_000_000.0]
    settings = KeySettings(default_cooldown_s=30, breaker_failures=2, breaker_open_s=60)
    pools = [KeyPool(store, settings, clock=lambda: clock[0], start_flusher=False) for _ in range(2)]
    for p in pools:
        p.sync([KeySpec("p", "secret-one-0001")])
    kid = pools[0].describe()[0]["id"]
    for i, p in enumerate(pools):
        p.record(kid, "m", "ok", latency_ms=100 + i * 100, status=200, tokens=10)
        p.record(kid, "m", "quota", latency_ms=3, status=429, retry_after=20)
        p.flush()
    p = pools[0]
    p.record(kid, "m", "transient", status=503)
    p.record(kid, "m", "transient", status=503)  # the circuit opens
    p.flush()
    out = history_jobs.read(store, clock[0], "1h", "5m", key_id=kid)
    assert out["totals"]["requests"] == 6
    assert out["totals"]["ok"] == 2 and out["totals"]["http_429"] == 2 and out["totals"]["tokens"] == 20
    assert out["totals"]["errors"] == {"quota": 2, "auth": 0, "transient": 2, "client": 0}
    assert 100 <= out["totals"]["latency_ms"]["p50"] <= 200
    assert out["totals"]["latency_ms"]["p95"] <= 200  # the max seen
    row = h.series([], [], 0, 60, 60)["points"][0]
    assert row["latency_ms"]["p50"] is None
    kinds = sorted((p["kind"], p["model"]) for p in out["periods"])
    assert kinds == [("circuit_open", None), ("cooldown", "m")]  # two workers' cooldowns joined
    hourly = history_jobs.read(store, clock[0], "7d", "1h", key_id=kid)
    assert hourly["resolution_s"] == 3600 and hourly["totals"]["requests"] == 6
    # 49 h later the minutes are gone, the hours stay
    clock[0] += 49 * 3600
    assert history_jobs.prune_once(store, clock[0]) > 0
    with store.snapshot() as tx:
        assert tx.history(60, 0, 2e9) == []
        assert sum(r.requests for r in tx.history(3600, 0, 2e9)) == 6
    clock[0] += 30 * 86400
    history_jobs.prune_once(store, clock[0])
    with store.snapshot() as tx:
        assert tx.history(3600, 0, 2e9) == [] and tx.history_periods(0, 2e9) == []
    for p in pools:
        p.close()
