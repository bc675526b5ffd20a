"""KeyPool against real SQLite files: selection, outcomes, admin ops, workers sharing one database."""
from __future__ import annotations

import collections
import time

import pytest
from keys_support import FAST, SECRETS, SPECS, Clock, eventually, make_pool

from proxy import errors
from proxy.errors import NoKeyAvailable
from proxy.keys import KeyAdmin, KeyPool, KeySpec, key_id

G = [key_id("gemini", s) for s in SECRETS]
M = "gemini-2.5-flash"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pool(any_database, clock):
    p = make_pool(any_database, clock, start_flusher=False)
    yield p
    p.close()


def test_acquire_returns_secret_only_in_key_and_spreads_by_weight(any_database, clock):
    specs = [KeySpec("gemini", SECRETS[0], weight=1), KeySpec("gemini", SECRETS[1], weight=3)]
    with make_pool(any_database, clock, specs=specs, start_flusher=False) as p:
        k = p.acquire("gemini", M)
        assert k.secret in SECRETS[:2] and k.id in G[:2] and k.secret not in repr(k)
        counts = collections.Counter(p.acquire("gemini", M).id for _ in range(400))
        assert counts == {G[0]: 100, G[1]: 300}


def test_lower_health_gets_less_traffic(pool):
    for _ in range(3):  # three failures: health 0.8**3 ≈ 0.51, breaker threshold 3 not reached twice
        pool.record(G[0], M, errors.TRANSIENT)
        pool.record(G[0], M, errors.OK)
    counts = collections.Counter(pool.acquire("gemini", M).id for _ in range(300))
    assert counts[G[0]] < counts[G[1]] == counts[G[2]]
    assert counts[G[0]] > 0


def test_keyless_provider_has_one_implicit_key(pool):
    k = pool.acquire("ollama", "llama3")
    assert (k.id, k.secret) == (key_id("ollama", None), None)


def test_never_picks_unusable_keys_and_honours_exclude(pool, clock):
    KeyAdmin(pool).disable(G[0], "leaked", actor="alice")
    pool.record(G[1], M, errors.AUTH, error="API_KEY_INVALID")
    assert {pool.acquire("gemini", M).id for _ in range(100)} == {G[2]}
    with pytest.raises(NoKeyAvailable) as ei:
        pool.acquire("gemini", M, exclude=frozenset({G[2]}))
    assert ei.value.status == 503
    assert {k["id"]: k["reason"] for k in ei.value.diagnosis[0]["keys"]} == {
        G[0]: "disabled: leaked", G[1]: "invalid", G[2]: "excluded (already tried)"}


def test_quota_cools_only_that_model_and_never_shortens(pool, clock):
    pool.record(G[0], M, errors.QUOTA, retry_after=100)
    pool.record(G[0], M, errors.QUOTA, retry_after=5)  # shorter: ignored
    assert {pool.acquire("gemini", M).id for _ in range(50)} == {G[1], G[2]}
    assert G[0] in {pool.acquire("gemini", "other-model").id for _ in range(6)}
    assert pool.get(G[0])["cooldowns"] == {M: 100.0}
    clock.t += 100.5
    assert G[0] in {pool.acquire("gemini", M).id for _ in range(6)}


def test_429_storm_only_cools_keys_and_they_come_back(pool, clock):
    for kid, ra in zip(G, (34.4, 50, 80), strict=True):
        pool.record(kid, M, errors.QUOTA, retry_after=ra)
    with pytest.raises(NoKeyAvailable) as ei:
        pool.acquire("gemini", M)
    assert ei.value.status == 429 and ei.value.response_headers() == {"Retry-After": "35"}
    assert all(k["reason"].startswith("cooling_down") for k in ei.value.diagnosis[0]["keys"])
    for d in pool.describe():
        assert (d["status"], d["circuit"], d["health"], d["usable"]) == ("ok", "closed", 1.0, True)
    clock.t += 35
    assert pool.acquire("gemini", M).id == G[0]
    clock.t += 60
    assert {pool.acquire("gemini", M).id for _ in range(9)} == set(G)


def test_daily_quota_cools_until_la_midnight(pool, clock):
    from datetime import datetime
    from zoneinfo import ZoneInfo
    clock.t = datetime(2024, 3, 9, 23, 0, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    pool.record(G[0], M, errors.QUOTA, retry_after=20, daily=True)
    assert pool.get(G[0])["cooldowns"] == {M: 3600.0}


def test_circuit_opens_then_one_half_open_probe_closes_it(pool, clock):
    for _ in range(3):
        pool.record(G[0], M, errors.TRANSIENT, error="timeout")
    d = pool.get(G[0])
    assert (d["circuit"], d["usable"], d["status"]) == ("open", False, "ok")
    assert G[0] not in {pool.acquire("gemini", M).id for _ in range(30)}
    clock.t += 30
    assert pool.acquire("gemini", M).id == G[0]  # the probe goes first
    assert pool.get(G[0])["circuit"] == "half_open"
    assert G[0] not in {pool.acquire("gemini", M).id for _ in range(30)}  # only one probe
    pool.record(G[0], M, errors.OK, latency_ms=50)
    assert pool.get(G[0])["circuit"] == "closed"
    assert G[0] in {pool.acquire("gemini", M).id for _ in range(3)}


def test_failed_probe_reopens(pool, clock):
    for _ in range(3):
        pool.record(G[0], M, errors.TRANSIENT)
    clock.t += 31
    assert pool.acquire("gemini", M).id == G[0]
    pool.record(G[0], M, errors.TRANSIENT)
    d = pool.get(G[0])
    assert d["circuit"] == "open" and d["circuit_seconds_left"] == 30.0


def test_client_errors_cost_nothing(pool):
    for _ in range(20):
        pool.record(G[0], M, errors.CLIENT, error="400 bad request")
    d = pool.get(G[0])
    got = (d["health"], d["circuit"], d["errors"], d["requests"], d["cooldowns"])
    assert got == (1.0, "closed", 0, 20, {})


def test_all_open_circuits_give_429_with_circuit_retry_after(pool, clock):
    for kid in G:
        for _ in range(3):
            pool.record(kid, M, errors.TRANSIENT)
        clock.t += 1
    with pytest.raises(NoKeyAvailable) as ei:
        pool.acquire("gemini", M)
    assert ei.value.status == 429 and ei.value.response_headers()["Retry-After"] == "27"
    assert ei.value.diagnosis[0]["keys"][0]["reason"] == "circuit_open (27s left)"


def test_503_for_unknown_provider_and_all_disabled(pool):
    with pytest.raises(NoKeyAvailable) as ei:
        pool.acquire("nope", M)
    assert ei.value.status == 503 and ei.value.diagnosis[0]["keys"] == []
    for kid in G:
        KeyAdmin(pool).disable(kid, "", actor="ops")
    with pytest.raises(NoKeyAvailable) as ei:
        pool.acquire("gemini", M)
    assert ei.value.status == 503 and {k["reason"] for k in ei.value.diagnosis[0]["keys"]} == {"disabled"}
    assert pool.usable_count() == 1  # the ollama key


def test_admin_ops_audit_and_errors(pool, clock):
    KeyAdmin(pool).disable(G[0], "rotating", actor="alice")
    KeyAdmin(pool).enable(G[0], actor="bob")
    KeyAdmin(pool).set_weight(G[1], 2.5, actor="alice")
    pool.record(G[2], M, errors.QUOTA)
    KeyAdmin(pool).reset(G[2], actor="carol")
    entries = KeyAdmin(pool).audit()
    assert [(e["actor"], e["action"], e["key_id"]) for e in entries] == [
        ("carol", "reset", G[2]), ("alice", "set_weight", G[1]), ("bob", "enable", G[0]),
        ("alice", "disable", G[0])]
    assert entries[-1]["before"]["enabled"] is True
    assert (entries[-1]["after"]["enabled"], entries[-1]["after"]["disabled_reason"]) == (False, "rotating")
    assert entries[1]["after"]["weight"] == 2.5 and pool.get(G[1])["weight"] == 2.5
    assert entries[0]["before"]["cooldowns"] and entries[0]["after"]["cooldowns"] == {}
    assert KeyAdmin(pool).audit(limit=1) == entries[:1]
    with pytest.raises(KeyError):
        KeyAdmin(pool).disable("k_0000000000", "x", actor="a")
    for bad in (0, -1, float("nan"), 1e9, "2"):
        with pytest.raises(ValueError):
            KeyAdmin(pool).set_weight(G[0], bad, actor="a")
    assert len(KeyAdmin(pool).audit()) == 4


def test_reset_clears_invalid_circuit_cooldowns_and_health(pool):
    pool.record(G[0], M, errors.AUTH)
    for _ in range(3):
        pool.record(G[1], M, errors.TRANSIENT)
    pool.record(G[2], M, errors.QUOTA)
    for kid in G:
        KeyAdmin(pool).reset(kid, actor="ops")
    for d in pool.describe()[:3]:
        got = (d["status"], d["circuit"], d["cooldowns"], d["health"], d["usable"])
        assert got == ("ok", "closed", {}, 1.0, True)


def test_retire_and_restore_keeps_history(pool, clock):
    for _ in range(4):
        pool.record(G[0], M, errors.OK)
    KeyAdmin(pool).disable(G[0], "old", actor="a")
    pool.sync(SPECS[1:])
    assert G[0] not in [d["id"] for d in pool.describe()]
    assert pool.get(G[0])["retired"] is True
    with pytest.raises(NoKeyAvailable):
        pool.acquire("gemini", M, exclude=frozenset(G[1:]))
    pool.sync(SPECS)
    d = pool.get(G[0])
    assert (d["retired"], d["requests"], d["enabled"], d["disabled_reason"]) == (False, 4, False, "old")
    assert [e["action"] for e in KeyAdmin(pool).audit()[:2]] == ["restore", "retire"]
    with pytest.raises(ValueError):
        pool.sync([SPECS[0], SPECS[0]])


def test_auth_invalid_then_revalidation_restores(any_database, clock):
    from proxy.keys import revalidate_once
    a = make_pool(any_database, clock, start_flusher=False)
    b = make_pool(any_database, clock, start_flusher=False)
    try:
        a.record(G[0], M, errors.AUTH, error=f"key {SECRETS[0]} invalid")
        assert a.get(G[0])["status"] == "invalid"
        assert KeyAdmin(a).due_for_revalidation() == []  # not before the interval
        clock.t += 300
        due = KeyAdmin(a).due_for_revalidation()
        assert [(k.id, k.secret) for k in due] == [(G[0], SECRETS[0])]
        assert KeyAdmin(b).due_for_revalidation() == []  # claimed by worker a
        KeyAdmin(a).record_probe(G[0], False)
        assert a.get(G[0])["status"] == "invalid"
        clock.t += 300
        probed = []
        assert revalidate_once(KeyAdmin(b), lambda k: probed.append(k.id) or True) == 1
        assert probed == [G[0]]
        assert a.get(G[0])["status"] == "ok"
        a.record(G[1], M, errors.AUTH)
        KeyAdmin(a).revalidate(G[1], actor="ops")  # operator asks for a probe now
        assert [k.id for k in KeyAdmin(b).due_for_revalidation()] == [G[1]]
        actions = [e["action"] for e in KeyAdmin(a).audit()]
        assert actions[:4] == ["revalidate", "invalid", "revalidated", "invalid"]
    finally:
        a.close()
        b.close()


def test_run_revalidation_loop_stops(any_database, clock):
    import threading

    from proxy.keys import run_revalidation
    p = make_pool(any_database, clock, start_flusher=False)
    p.record(G[0], M, errors.AUTH)
    clock.t += 301
    stop = threading.Event()
    t = threading.Thread(target=run_revalidation, args=(KeyAdmin(p), lambda k: True, stop, 0.01))
    t.start()
    try:
        eventually(lambda: p.get(G[0])["status"] == "ok")
    finally:
        stop.set()
        t.join(2)
        p.close()
    assert not t.is_alive()


# --- two workers on one database ------------------------------------------------------------------

def test_transitions_in_one_worker_are_obeyed_by_another_within_1s(any_database):
    a = make_pool(any_database)
    b = make_pool(any_database)
    try:
        for kid in G:
            b.acquire("gemini", M, exclude=frozenset(set(G) - {kid}))  # b's view: all usable
        KeyAdmin(a).disable(G[0], "leaked", actor="ops")
        a.record(G[1], M, errors.AUTH)
        for _ in range(3):
            a.record(G[2], M, errors.TRANSIENT)

        def b_blocked(kid):
            try:
                b.acquire("gemini", M, exclude=frozenset(set(G) - {kid}))
            except NoKeyAvailable:
                return True
            return False
        for kid in G:
            assert eventually(lambda kid=kid: b_blocked(kid)) < 1.0
        KeyAdmin(a).reset(G[2], actor="ops")
        a.record(G[2], M, errors.QUOTA, retry_after=40)
        assert eventually(lambda: b_blocked(G[2])) < 1.0
        KeyAdmin(a).reset(G[2], actor="ops")
        assert eventually(lambda: not b_blocked(G[2])) < 1.0
    finally:
        a.close()
        b.close()


def test_half_open_probe_is_claimed_by_exactly_one_worker(any_database, clock):
    slow = FAST.__class__(**{**FAST.__dict__, "refresh_interval_s": 3600.0})  # b relies on the SQL claim only
    a = make_pool(any_database, clock, start_flusher=False)
    b = make_pool(any_database, clock, settings=slow, start_flusher=False)
    try:
        for _ in range(3):
            a.record(G[0], M, errors.TRANSIENT)
        b._maybe_refresh(force=True)
        clock.t += 30
        only_g0 = frozenset(G[1:])
        assert a.acquire("gemini", M, exclude=only_g0).id == G[0]
        with pytest.raises(NoKeyAvailable) as ei:
            b.acquire("gemini", M, exclude=only_g0)
        assert "half_open (probe in flight" in ei.value.diagnosis[0]["keys"][0]["reason"]
        assert ei.value.status == 429
        a.record(G[0], M, errors.OK)
        b._maybe_refresh(force=True)
        assert b.acquire("gemini", M, exclude=only_g0).id == G[0]
    finally:
        a.close()
        b.close()


def test_half_open_claim_race_between_threads(any_database, clock):
    import threading
    pools = [make_pool(any_database, clock, start_flusher=False) for _ in range(6)]
    for _ in range(3):
        pools[0].record(G[0], M, errors.TRANSIENT)
    for p in pools:
        p._maybe_refresh(force=True)
    clock.t += 30
    wins, barrier = [], threading.Barrier(len(pools))

    def go(p):
        barrier.wait()
        try:
            wins.append(p.acquire("gemini", M, exclude=frozenset(G[1:])).id)
        except NoKeyAvailable:
            pass
    threads = [threading.Thread(target=go, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in pools:
        p.close()
    assert wins == [G[0]]


def test_restart_keeps_every_state(any_database, clock):
    a = make_pool(any_database, clock)
    KeyAdmin(a).disable(G[0], "leaked", actor="ops")
    a.record(G[1], M, errors.AUTH)
    for _ in range(3):
        a.record(G[2], M, errors.TRANSIENT)
    a.record(G[2], "other", errors.QUOTA, retry_after=90)
    a.close()
    b = make_pool(any_database, clock)
    try:
        d = {x["id"]: x for x in b.describe()}
        assert (d[G[0]]["enabled"], d[G[0]]["disabled_reason"]) == (False, "leaked")
        assert d[G[1]]["status"] == "invalid"
        assert d[G[2]]["circuit"] == "open" and d[G[2]]["cooldowns"] == {"other": 90.0}
        assert d[G[2]]["requests"] == 4 and d[G[2]]["errors"] == 4
    finally:
        b.close()


def test_counters_are_batched_and_flushed_by_close(any_database, clock):
    a = make_pool(any_database, clock, start_flusher=False)
    b = make_pool(any_database, clock, start_flusher=False)
    for i in range(10):
        a.record(G[0], M, errors.OK, latency_ms=100 + i)
    assert b.get(G[0])["requests"] == 0  # not yet flushed: no write per request
    a.close()
    d = b.get(G[0])
    assert (d["requests"], d["errors"], d["latency_ms_avg"]) == (10, 0, 104.5)
    b.close()


def test_background_flusher_writes_counters(any_database):
    a = make_pool(any_database)
    b = make_pool(any_database, start_flusher=False)
    try:
        a.record(G[0], M, errors.TRANSIENT, error="reset by peer")
        eventually(lambda: b.get(G[0])["requests"] == 1)
        d = b.get(G[0])
        assert d["last_error"] == "reset by peer" and d["health"] < 1.0
    finally:
        a.close()
        b.close()


def test_health_merges_observations_from_two_workers(any_database, clock):
    a = make_pool(any_database, clock, start_flusher=False)
    b = make_pool(any_database, clock, start_flusher=False)
    a.record(G[0], M, errors.TRANSIENT)
    b.record(G[0], M, errors.TRANSIENT)
    a.flush()
    b.flush()
    assert a.get(G[0])["health"] == pytest.approx(0.64, abs=1e-3)
    assert a.get(G[0])["requests"] == 2
    a.close()
    b.close()


def test_acquire_and_record_are_fast(any_database):
    with make_pool(any_database) as p:
        start = time.perf_counter()
        for _ in range(10_000):
            k = p.acquire("gemini", M)
            p.record(k.id, M, errors.OK, latency_ms=5)
        assert time.perf_counter() - start < 1.0
    with KeyPool(str(any_database), FAST, start_flusher=False) as q:
        q.sync(SPECS)
        assert sum(d["requests"] for d in q.describe()) == 10_000


def test_record_for_unknown_key_or_bad_outcome(pool):
    pool.record("k_0000000000", M, errors.OK)  # ignored (e.g. key dropped by a config reload)
    with pytest.raises(ValueError):
        pool.record(G[0], M, "weird")
