"""Slices of a busy client's capacity (proxy/clients/slices.py) on both store backends, with an injected
clock: admissions from a slice cost no store operation, two workers' slices never pass a limit
together, what a slice did not use goes back, a budget hold counts as spent, and near a limit there are
no slices at all."""
from __future__ import annotations

import pytest
from test_client_limits import T0, Clock, bucket, client, config, finished

from proxy.clients.limits import Limiter, RateLimited
from proxy.clients.model import Usage
from proxy.clients.slices import MIN_SLICE, ROOM, SLICE_S

HIGH = 10**9


def body(max_tokens: int = 10) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


@pytest.fixture
def clock():
    return Clock()


def row(store, scope="c_test"):
    with store.snapshot() as tx:
        return tx.limit_rows([scope])[scope]


def test_a_busy_client_is_admitted_from_a_slice_without_a_store_operation(any_store, clock):
    lim = Limiter(config(), any_store, clock)
    c = client(rpm=HIGH, tpm=HIGH, max_concurrent=HIGH)
    lim.admit(c, "m", body())  # slow so far: its own transaction
    lim.admit(c, "m", body())  # the second within SLICE_S: takes a slice of 1 more
    ops = lim.group.ops
    third = lim.admit(c, "m", body())
    assert lim.group.ops == ops  # from the slice: no store operation
    assert third.lease is not None and third.headers["x-ratelimit-limit-requests"] == str(HIGH)
    # the store already counts the slice as admitted: 3 requests, 3 slots, 3 reservations
    r = row(any_store)
    assert r.hits_n == 3 and r.reserved == 3 * third.reserved_tokens
    # the slice ran out in time: the next one is twice as large (1 + 3 more)
    lim.admit(c, "m", body())
    ops = lim.group.ops
    for _ in range(3):
        lim.admit(c, "m", body())
    assert lim.group.ops == ops
    assert row(any_store).hits_n == 7


def test_what_a_slice_did_not_use_goes_back(any_store, clock):
    lim = Limiter(config(), any_store, clock)
    c = client(rpm=HIGH, tpm=HIGH, max_concurrent=HIGH)
    adms = [lim.admit(c, "m", body()) for _ in range(4)]  # 1, a slice of 1 more, 1 + a slice of 3
    assert row(any_store).hits_n == 7  # 3 not used
    for a in adms:
        lim.settle(a, finished(a, usage=Usage(3, 2)), None)
    clock.t += SLICE_S
    lim.sweep()
    r = row(any_store)
    assert r.hits_n == 4 and r.reserved == 0 and r.flight == ""  # as if only the 4 had come
    level, _, charged, reserved = bucket(any_store, c.id)
    assert charged == 20 and reserved == 0 and level == HIGH  # refilled: the bucket is full again
    # the hits of the window add up, and a later admission finds nothing held
    assert sum(int(p.split(":")[1]) for p in r.hits.split(",")) == 4


def test_two_workers_slices_never_pass_the_limit_together(any_store, clock):
    a, b = Limiter(config(), any_store, clock), Limiter(config(), any_store, clock)
    c = client(rpm=2000, max_concurrent=HIGH)
    admitted = 0
    for i in range(2500):  # interleaved, all inside one minute
        clock.t = T0 + i * 0.001
        try:
            (a if i % 3 else b).admit(c, "m", body())
            admitted += 1
        except RateLimited:
            pass
    assert admitted <= 2000
    assert a.group.ops < 1000  # a admitted ~1,660 of them, most from slices
    for w in (a, b):
        w.close()  # both give back what they hold
    late = 0
    for _ in range(200):
        try:
            a.admit(c, "m", body())
            late += 1
        except RateLimited:
            pass
    assert admitted + late == 2000  # once given back, exactly the limit
    assert row(any_store).hits_n == 2000


def test_no_slice_near_a_limit(any_store, clock):
    """A limit under ROOM * MIN_SLICE is never sliced: every admission is its own transaction (exact)."""
    lim = Limiter(config(), any_store, clock)
    c = client(rpm=ROOM * MIN_SLICE)
    for _ in range(ROOM * MIN_SLICE):
        ops = lim.group.ops
        lim.admit(c, "m", body())
        assert lim.group.ops == ops + 1
    with pytest.raises(RateLimited):
        lim.admit(c, "m", body())


def test_a_budget_hold_counts_as_spent_for_every_worker(any_store, clock):
    a, b = Limiter(config(), any_store, clock), Limiter(config(), any_store, clock)
    c = client(rpm=HIGH, budget_usd=1.0, budget_period="day")
    first = a.admit(c, "m", body())
    a.settle(first, finished(first, usage=Usage(1, 1)), 0.001)  # a now knows what a request costs
    a.admit(c, "m", body())  # busy: a slice, holding a share of the headroom
    r = row(any_store)
    held = r.held(clock())
    assert 0 < held <= (1.0 - 0.001) / ROOM + 1e-12
    # b is refused once the spend and the hold reach the budget, before the spend alone does
    last = b.admit(c, "m", body())
    b.settle(last, finished(last, usage=Usage(1, 1)), 1.0 - 0.001 - held)
    with pytest.raises(RateLimited) as e:
        b.admit(c, "m", body())
    assert e.value.code == "budget_exceeded"
    a.close()  # the hold is released: the spend alone is just under the budget again
    b.admit(c, "m", body())


def test_settled_into_a_slice_or_alone_the_totals_are_exact(any_store, clock):
    """Requests settled while their slice lives are written when it ends, those settled later alone:
    either way the bucket, the slots and the spend come out exact."""
    lim = Limiter(config(), any_store, clock)
    c = client(rpm=HIGH, tpm=HIGH, max_concurrent=HIGH, budget_usd=1000.0, budget_period="day")
    first = lim.admit(c, "m", body())
    lim.settle(first, finished(first, usage=Usage(3, 2)), 0.01)  # the cost of a request is known now
    adms = [lim.admit(c, "m", body()) for _ in range(20)]
    assert any(s.__class__.__name__ == "Slice" for a in adms for s in a.scopes)
    late = adms[:5]
    for a in adms[5:]:  # these end while their slices may still live
        lim.settle(a, finished(a, usage=Usage(3, 2)), 0.01)
    clock.t += SLICE_S
    lim.sweep()  # the slices end with 5 requests in flight
    for a in late:
        lim.settle(a, finished(a, usage=Usage(3, 2)), 0.01)
    lim.close()
    spend = lim.spend(c)
    assert spend["requests"] == 21 and spend["tokens"] == 21 * 5
    assert spend["cost_usd"] == pytest.approx(0.21)
    level, _, charged, reserved = bucket(any_store, c.id)
    assert charged == 21 * 5 and reserved == 0
    r = row(any_store)
    assert r.flight == "" and r.holds == "" and r.hits_n == 21
