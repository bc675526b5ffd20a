"""Limits while the database is away: an unreachable PostgreSQL server admits without a check (counted),
a locked database still refuses (exact limits), and a settlement the store could not take is kept and
replayed by the next request, its usage record written regardless."""
from __future__ import annotations

import pytest

from proxy.clients.gate import Gate
from proxy.clients.limits import Limiter, LimitsUnavailable
from proxy.clients.model import Usage
from proxy.observability import metrics
from proxy.store.postgres import PostgresStore
from tests.pg_server import free_port
from tests.unit.test_client_limits import T0, Clock, body, client, config, finished


def test_unreachable_postgres_admits_without_a_check():
    store = PostgresStore(f"postgresql://keyrelay@127.0.0.1:{free_port()}/gone", lock_wait_s=0.3,
                          migrate=False, listen=False)  # nothing listens there: every call is refused
    limiter = Limiter(config(), store, Clock())
    before = metrics.LIMITS_DEGRADED._value.get()
    c = client(rpm=1)
    admissions = [limiter.admit(c, "m", body()) for _ in range(3)]  # over rpm: not checkable now
    assert all(a is not None and a.lease is None and not a.headers for a in admissions)
    assert metrics.LIMITS_DEGRADED._value.get() - before == 3
    store.close()


def test_a_locked_database_still_refuses(any_backend):
    store = any_backend.open(lock_wait_s=0.2)
    limiter = Limiter(config(), store, Clock())
    with any_backend.lock(), pytest.raises(LimitsUnavailable):
        limiter.admit(client(rpm=5), "m", body())


def test_a_settlement_the_store_refused_is_replayed_by_the_next_request(any_backend):
    store = any_backend.open(lock_wait_s=0.2)
    gate = Gate(config(), store, Clock())
    c = client(budget_usd=100.0, budget_period="day")
    first = gate.limiter.admit(c, "m", body())
    with any_backend.lock():  # the settlement cannot get the write lock: kept, usage still queued
        gate.finish(finished(first, usage=Usage(20, 30), at=T0))
    assert len(gate._unsettled) == 1
    assert gate.limiter.spend(c)["requests"] == 0
    second = gate.limiter.admit(c, "m", body())
    gate.finish(finished(second, usage=Usage(1, 1), at=T0))  # replays the first, then settles itself
    assert gate._unsettled == []
    spend = gate.limiter.spend(c)
    assert (spend["requests"], spend["tokens"]) == (2, 52)
    gate.usage.flush()
    assert gate.usage.store is store
    with store.snapshot() as tx:
        assert tx.usage_count() == 2  # both usage records, the refused settlement's too
    gate.close()
