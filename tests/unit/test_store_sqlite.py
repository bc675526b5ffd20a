"""The KeyStore interface, method by method, on real database files.

Written against ``proxy.store.base.KeyStore`` only: a backend joins by adding itself to
``tests/stores.py`` (the ``any_backend`` fixture's params, and a lock holder for the lock tests).
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from proxy.keys.breaker import Breaker
from proxy.store.base import MAX_COOLDOWNS_PER_KEY, KeyStore, StoreUnavailable, bounded_cooldowns
from proxy.store.sqlite import SQLiteStore, readiness
from tests.stores import Backend

NOW = 1_700_000_000.0


@pytest.fixture
def backend(any_backend: Backend) -> tuple[KeyStore, Callable[[], object]]:
    """A store on each backend (tests/stores.py) and a way to hold its write lock from elsewhere."""
    return any_backend.open(lock_wait_s=0.3), any_backend.lock


@pytest.fixture
def store(backend) -> KeyStore:
    return backend[0]


def add_keys(store: KeyStore, *ids: str, provider: str = "gemini") -> None:
    with store.transaction() as tx:
        for i, kid in enumerate(ids):
            tx.upsert_configured(kid, provider, f"label{i}", 1.0 + i, NOW)


K1, K2, K3 = "k_0000000001", "k_0000000002", "k_0000000003"


# --- key rows -------------------------------------------------------------------------------------

def test_upsert_configured_inserts_then_refreshes_and_unretires(store):
    add_keys(store, K1, K2)
    with store.transaction() as tx:
        tx.update(K1, retired=True, retired_at=NOW)
    with store.snapshot() as tx:
        assert tx.key(K1).retired is True
        assert [k.id for k in tx.keys()] == [K1, K2]
    with store.transaction() as tx:
        tx.upsert_configured(K1, "gemini", "renamed", 4.0, NOW + 10)
    with store.snapshot() as tx:
        k = tx.key(K1)
    assert (k.label, k.config_weight, k.retired, k.retired_at) == ("renamed", 4.0, False, None)
    assert k.created_at == NOW
    assert (k.enabled, k.status, k.breaker, k.health, k.requests) == (True, "ok", Breaker(), 1.0, 0)


def test_key_of_unknown_id_is_none(store):
    with store.snapshot() as tx:
        assert tx.key(K1) is None
        assert tx.keys() == []


def test_insert_retired(store):
    with store.transaction() as tx:
        tx.insert_retired(K3, "openai", None, 2.0, NOW)
    with store.snapshot() as tx:
        k = tx.key(K3)
    assert (k.provider, k.label, k.config_weight, k.retired, k.retired_at) == ("openai", None, 2.0, True, NOW)


def test_update_sets_columns_and_breaker_and_refuses_unknown_ones(store):
    add_keys(store, K1)
    b = Breaker("open", NOW + 30, 5, NOW, None)
    with store.transaction() as tx:
        tx.update(K1, enabled=False, disabled_reason="leaked", weight_override=2.5, breaker=b,
                  health=0.5, health_at=NOW, last_error="boom", last_error_at=NOW)
        tx.update(K1)  # nothing to do
    with store.snapshot() as tx:
        k = tx.key(K1)
    assert (k.enabled, k.disabled_reason, k.weight, k.breaker, k.health, k.last_error) == (
        False, "leaked", 2.5, b, 0.5, "boom")
    with pytest.raises(ValueError, match="not updatable"), store.transaction() as tx:
        tx.update(K1, id="k_9999999999")
    with pytest.raises(ValueError, match="not updatable"), store.transaction() as tx:
        tx.update(K1, secret="x")


def test_add_counters_adds(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        tx.add_counters(K1, 3, 1, 30.0, 2)
        tx.add_counters(K1, 2, 0, 10.5, 1)
    with store.snapshot() as tx:
        k = tx.key(K1)
    assert (k.requests, k.errors, k.latency_ms_total, k.latency_samples) == (5, 1, 40.5, 3)


def test_mark_invalid_and_valid_apply_once(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        assert tx.mark_invalid(K1, "bad key", NOW) is True
        assert tx.mark_invalid(K1, "again", NOW + 1) is False
    with store.snapshot() as tx:
        k = tx.key(K1)
    assert (k.status, k.status_reason, k.status_at, k.last_probe_at) == ("invalid", "bad key", NOW, NOW)
    with store.transaction() as tx:
        assert tx.mark_valid(K1, NOW + 5) is True
        assert tx.mark_valid(K1, NOW + 6) is False
        assert tx.mark_invalid("k_9999999999", None, NOW) is False
    with store.snapshot() as tx:
        k = tx.key(K1)
    assert (k.status, k.status_reason, k.status_at) == ("ok", None, NOW + 5)


def test_claim_half_open_only_when_due_and_once(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        assert tx.claim_half_open(K1, NOW, NOW - 60) is False  # closed
        tx.update(K1, breaker=Breaker("open", NOW + 30, 5, NOW, None))
        assert tx.claim_half_open(K1, NOW, NOW - 60) is False  # still open
        assert tx.claim_half_open(K1, NOW + 30, NOW - 30) is True
        assert tx.claim_half_open(K1, NOW + 31, NOW - 29) is False  # claimed, not stale
        assert tx.claim_half_open(K1, NOW + 100, NOW + 40) is True  # the claim went stale
    with store.snapshot() as tx:
        b = tx.key(K1).breaker
    assert (b.state, b.probe_at) == ("half_open", NOW + 100)


def test_claim_revalidation_only_for_due_invalid_active_keys(store):
    add_keys(store, K1, K2)
    with store.transaction() as tx:
        assert tx.claim_revalidation(K1, NOW, NOW - 300) is False  # ok keys are not probed
        tx.mark_invalid(K1, None, NOW)
        tx.mark_invalid(K2, None, NOW)
        tx.update(K2, retired=True)
        assert tx.claim_revalidation(K1, NOW + 10, NOW - 290) is False  # probed at NOW: not due
        assert tx.claim_revalidation(K1, NOW + 300, NOW) is True
        assert tx.claim_revalidation(K1, NOW + 301, NOW + 1) is False  # just claimed
        assert tx.claim_revalidation(K2, NOW + 300, NOW) is False  # retired
    with store.snapshot() as tx:
        assert tx.key(K1).last_probe_at == NOW + 300


# --- cooldowns ------------------------------------------------------------------------------------

def test_cooldowns_never_shorten_and_expired_ones_are_hidden(store):
    add_keys(store, K1, K2)
    with store.transaction() as tx:
        tx.raise_cooldown(K1, "flash", NOW + 60, NOW)
        tx.raise_cooldown(K1, "flash", NOW + 10, NOW)  # shorter: ignored
        tx.raise_cooldown(K1, "pro", NOW + 5, NOW)
        tx.raise_cooldown(K2, "flash", NOW + 90, NOW)
    with store.snapshot() as tx:
        assert tx.cooldowns(K1, NOW) == {"flash": NOW + 60, "pro": NOW + 5}
        assert tx.cooldowns(K1, NOW + 5) == {"flash": NOW + 60}
        assert tx.all_cooldowns(NOW + 5) == {K1: {"flash": NOW + 60}, K2: {"flash": NOW + 90}}
    with store.transaction() as tx:
        tx.raise_cooldown(K1, "flash", NOW + 120, NOW)
        tx.purge_cooldowns(NOW + 100)  # drops rows that ended before then
    with store.snapshot() as tx:
        assert tx.all_cooldowns(0) == {K1: {"flash": NOW + 120}}


def test_replace_cooldowns(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        tx.raise_cooldown(K1, "old", NOW + 60, NOW)
        tx.replace_cooldowns(K1, {"a": NOW + 1, "b": NOW + 2})
    with store.snapshot() as tx:
        assert tx.cooldowns(K1, NOW) == {"a": NOW + 1, "b": NOW + 2}
    with store.transaction() as tx:
        tx.replace_cooldowns(K1, {})
    with store.snapshot() as tx:
        assert tx.cooldowns(K1, 0) == {}


def test_cooldown_rows_per_key_are_bounded_expired_first_then_soonest(store):
    add_keys(store, K1, K2)
    limit = 8
    with store.transaction() as tx:
        tx.raise_cooldown(K2, "other-key", NOW + 1, NOW, limit)
        for i in range(3):
            tx.raise_cooldown(K1, f"expired{i}", NOW + i, NOW, limit)
        for i in range(limit - 3):
            tx.raise_cooldown(K1, f"m{i}", NOW + 100 + i, NOW, limit)
    with store.snapshot() as tx:
        assert len(tx.cooldowns(K1, 0)) == limit
    # later: the three "expired*" have ended; two new models arrive -> the expired ones go first
    later = NOW + 50
    with store.transaction() as tx:
        tx.raise_cooldown(K1, "new0", later + 500, later, limit)
        tx.raise_cooldown(K1, "new1", later + 500, later, limit)
    with store.snapshot() as tx:
        rows = tx.cooldowns(K1, 0)
    assert not any(m.startswith("expired") for m in rows) and {"new0", "new1"} <= set(rows)
    assert len(rows) == limit - 1  # all three expired rows were dropped, none of the live ones
    with store.transaction() as tx:
        for i in range(3):
            tx.raise_cooldown(K1, f"late{i}", later + 900, later, limit)
    with store.snapshot() as tx:
        rows = tx.cooldowns(K1, 0)
        assert tx.cooldowns(K2, 0) == {"other-key": NOW + 1}  # other keys untouched
    assert len(rows) == limit
    assert "m0" not in rows and "m1" not in rows  # the soonest-expiring live ones went
    expected = bounded_cooldowns({**{f"m{i}": NOW + 100 + i for i in range(limit - 3)},
                                  "new0": later + 500, "new1": later + 500,
                                  **{f"late{i}": later + 900 for i in range(3)}}, later, limit)
    assert rows == expected


def test_default_bound_is_1024_rows_per_key(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        for i in range(MAX_COOLDOWNS_PER_KEY + 76):
            tx.raise_cooldown(K1, f"model-{i:05d}", NOW + 60 + i, NOW)
    with store.snapshot() as tx:
        rows = tx.cooldowns(K1, 0)
    assert len(rows) == MAX_COOLDOWNS_PER_KEY and "model-00000" not in rows and "model-01099" in rows


def test_bounded_cooldowns_rule():
    assert bounded_cooldowns({"a": 1.0}, 5.0, 1) == {"a": 1.0}  # within the limit: untouched
    assert bounded_cooldowns({"a": 1.0, "b": 9.0}, 5.0, 1) == {"b": 9.0}
    assert bounded_cooldowns({"a": 7.0, "b": 9.0, "c": 7.0}, 5.0, 2) == {"b": 9.0, "c": 7.0}


# --- audit ----------------------------------------------------------------------------------------

def test_audit_rows_round_trip_newest_first(store):
    add_keys(store, K1)
    with store.transaction() as tx:
        tx.add_audit(NOW, "alice", "disable", K1, {"enabled": True}, {"enabled": False, "why": "é"})
        tx.add_audit(NOW + 1, "ops", "reload", None, None, None)
    with store.snapshot() as tx:
        rows = tx.audit(10)
        assert tx.audit(1) == rows[:1]
    assert [(r["actor"], r["action"], r["key_id"], r["before"], r["after"]) for r in rows] == [
        ("ops", "reload", None, None, None),
        ("alice", "disable", K1, {"enabled": True}, {"enabled": False, "why": "é"})]
    assert rows[0]["id"] > rows[1]["id"] and rows[1]["at"] == NOW


# --- transactions, change token, locks ------------------------------------------------------------

def test_transaction_is_all_or_nothing(store):
    add_keys(store, K1)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.update(K1, enabled=False)
        tx.add_audit(NOW, "a", "disable", K1, None, None)
        raise RuntimeError("boom")
    with store.snapshot() as tx:
        assert tx.key(K1).enabled is True and tx.audit(10) == []


def test_change_token_moves_on_another_connections_commit(tmp_path, backend):
    """SQLite: at once (PRAGMA data_version); PostgreSQL: within 1 s (NOTIFY heard by the LISTEN)."""
    from proxy.store.postgres import PostgresStore

    store, _ = backend
    if isinstance(store, PostgresStore):
        store = PostgresStore(store.url, lock_wait_s=0.3, backstop_s=3600)  # no backstop turn mid-test
        store.start_listening()
        other: KeyStore = PostgresStore(store.url, listen=False)
    else:
        other = SQLiteStore(store.path)
    try:
        token = store.change_token()
        time.sleep(0.3)
        assert store.change_token() == token
        with other.transaction() as tx:  # a quiet table: no notification
            tx.claim_job("quiet", "o:1", NOW, 1.0)
        time.sleep(0.3)
        assert store.change_token() == token or isinstance(store, SQLiteStore)
        add_keys(other, K1)
        deadline = time.monotonic() + 1.0
        while store.change_token() == token and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.change_token() != token
    finally:
        other.close()
        if store is not backend[0]:
            store.close()


def test_change_token_is_cheap(store):
    add_keys(store, K1)
    start = time.perf_counter()
    for _ in range(10_000):
        store.change_token()
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per change_token()"


def test_locked_database_write_waits_until_deadline_then_raises(backend):
    store, lock = backend
    add_keys(store, K1)
    holder = lock()
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"), store.transaction(timeout=0.2) as tx:
            tx.update(K1, enabled=False)
        assert 0.15 <= time.monotonic() - start < 1.0
        assert store.check_writable(0.05).startswith("database not writable: ")
        with store.snapshot() as tx:  # readers are not blocked by a writer
            assert tx.key(K1).enabled is True
        store.change_token()
    finally:
        holder.release()
    assert store.check_writable(0.05) is None


def test_lock_wait_is_cooperative_and_succeeds_once_released(backend):
    """While one caller waits for the lock, other threads (greenlets under gevent) keep using the store."""
    store, lock = backend
    add_keys(store, K1)
    holder = lock()
    done = threading.Event()

    def writer():
        with store.transaction(timeout=5) as tx:
            tx.update(K1, disabled_reason="after the lock")
        done.set()
    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.1)
        start = time.monotonic()
        for _ in range(20):
            store.change_token()
            with store.snapshot() as tx:
                tx.key(K1)
        assert time.monotonic() - start < 0.2  # not stuck behind the waiting writer
        assert not done.is_set()
    finally:
        holder.release()
    t.join(5)
    assert done.is_set()
    with store.snapshot() as tx:
        assert tx.key(K1).disabled_reason == "after the lock"


# --- SQLite specifics -----------------------------------------------------------------------------

def test_sqlite_readiness(tmp_path):
    path = tmp_path / "ready.db"
    assert "cannot open" in readiness(path)
    SQLiteStore(path).close()
    assert readiness(path) is None
    child = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\nsys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        start = time.monotonic()
        problem = readiness(path, write_timeout_s=0.1)
        assert problem is not None and problem.startswith("database not writable: "), problem
        assert time.monotonic() - start < 1.0
    finally:
        child.communicate("\n", timeout=5)
    assert readiness(path) is None
    path.write_bytes(b"garbage, not a database" * 100)
    assert "not a database" in readiness(path)


# --- one-at-a-time background jobs ----------------------------------------------------------------

def test_job_claim_one_holder_until_it_lapses(store):
    def claim(owner: str, now: float) -> bool:
        with store.transaction() as tx:
            return tx.claim_job("usage_purge", owner, now, 60.0)

    assert claim("a:1", NOW) is True
    assert claim("b:2", NOW + 1) is False  # a holds it
    assert claim("a:1", NOW + 2) is True   # the holder renews
    assert claim("b:2", NOW + 61) is False  # renewed at NOW+2: until NOW+62
    assert claim("b:2", NOW + 62) is True  # lapsed: b takes over
    assert claim("a:1", NOW + 63) is False
    with store.transaction() as tx:
        assert tx.claim_job("history_prune", "a:1", NOW + 63, 60.0) is True  # claims are per job


def test_job_claim_concurrent_claimers_one_wins(backend):
    """8 threads, each with its own store (own connection), race for one claim: exactly one wins."""
    from proxy.store.postgres import PostgresStore

    store, _ = backend
    stores = [PostgresStore(store.url, listen=False) if isinstance(store, PostgresStore)
              else SQLiteStore(store.path, lock_wait_s=2.0) for _ in range(8)]
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(s: KeyStore, i: int) -> None:
        barrier.wait()
        with s.transaction() as tx:
            wins.append(tx.claim_job("rollup", f"h:{i}", NOW, 30.0))

    threads = [threading.Thread(target=race, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for s in stores:
        s.close()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_long_wait_on_a_connection_a_short_call_opened(backend):
    """The store's connection (SQLite's one, or a pooled PostgreSQL one opened under a 0.3 s deadline)
    serves a later write that may wait 3 s: it waits for the lock, not for a socket timeout."""
    store, lock = backend
    add_keys(store, K1)  # opens the connection (lock wait 0.3 s)
    holder = lock()
    result: dict = {}

    def writer() -> None:
        try:
            with store.transaction(timeout=3) as tx:
                tx.update(K1, disabled_reason="waited")
            result["ok"] = True
        except StoreUnavailable as exc:
            result["error"] = str(exc)
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    holder.release()
    t.join(5)
    assert result == {"ok": True}
    with store.snapshot() as tx:
        assert tx.key(K1).disabled_reason == "waited"


# --- PostgreSQL specifics -------------------------------------------------------------------------

def test_pg_a_pooled_connection_keeps_the_io_timeout_not_its_first_callers_deadline(pg_url):
    """A connection opened under a 0.3 s deadline later serves a statement that takes 1 s (it used to
    keep a 0.3 s socket timeout and fail as "database unreachable ... timed out")."""
    from proxy.store.postgres import PostgresStore

    store = PostgresStore(pg_url, lock_wait_s=0.3, listen=False)
    try:
        with store.transaction():  # opens the pooled connection, 0.3 s before its deadline
            pass
        start = time.monotonic()
        with store.transaction(timeout=3) as tx:
            tx._run("SELECT pg_sleep(1)")
        assert 0.9 < time.monotonic() - start < 3
    finally:
        store.close()
