"""The key pool and admin while another connection holds the database write lock (on both store
backends): callers that must write wait (at most the lock wait) without blocking the pool for everyone
else, and nothing is lost."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from keys_support import FAST, SECRETS, make_pool

from proxy import errors
from proxy.keys import KeyAdmin, key_id
from proxy.store.base import StoreUnavailable

G = [key_id("gemini", s) for s in SECRETS]
M = "gemini-2.5-flash"
WAIT = replace(FAST, busy_timeout_ms=400)


def test_transition_waits_alone_then_is_deferred_and_written_by_the_next_flush(any_backend):
    db = any_backend.database
    a = make_pool(db, settings=WAIT, start_flusher=False)
    b = make_pool(db, settings=WAIT, start_flusher=False)
    # PostgreSQL: the pool's connections are opened lazily (a connect is ~0.1 s), and b's writes are
    # heard by a: open two, take in what was sent, so the timing below is acquire's alone
    any_backend.warm(a.store, connections=2)
    any_backend.changes(a.store)
    a.acquire("gemini", M)
    lock = any_backend.lock()
    try:
        recorder = threading.Thread(target=a.record, args=(G[0], M, errors.AUTH))
        recorder.start()
        time.sleep(0.05)  # the recorder is now waiting for the write lock
        slowest = 0.0
        while recorder.is_alive():
            start = time.monotonic()
            a.acquire("gemini", M)  # the pool lock is free: acquire is not stuck behind the write
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.005)
        recorder.join()
        assert slowest < 0.1, slowest
        with pytest.raises(errors.NoKeyAvailable):  # the local view obeys at once
            a.acquire("gemini", M, exclude=frozenset(G[1:]))
        assert a.flush(timeout=0.05) is False  # still locked: kept for later
    finally:
        lock.release()
    assert a.flush() is True
    assert b.get(G[0])["status"] == "invalid"
    assert [e["action"] for e in KeyAdmin(b).audit()][:1] == ["invalid"]
    a.close()
    b.close()


def test_a_reload_keeps_what_deferred_transitions_changed_in_the_local_view(any_backend):
    """A reload while a transition waits for the database (PostgreSQL's backstop turns the change token
    every few seconds) does not undo it in the local view."""
    db = any_backend.database
    with make_pool(db, settings=WAIT, start_flusher=False) as a:
        a.acquire("gemini", M)
        lock = any_backend.lock()
        try:
            a.record(G[0], M, errors.AUTH)  # waits its lock wait, then is deferred
            a.record(G[1], M, errors.QUOTA, retry_after=600)  # deferred behind it
            a.reload()  # the store still has both keys usable
            with pytest.raises(errors.NoKeyAvailable):
                a.acquire("gemini", M, exclude=frozenset(G[1:]))
            with pytest.raises(errors.NoKeyAvailable):
                a.acquire("gemini", M, exclude=frozenset([G[0], *G[2:]]))
        finally:
            lock.release()
        assert a.flush() is True
        a.reload()
        assert a.get(G[0])["status"] == "invalid" and M in a.get(G[1])["cooldowns_until"]


def test_a_reload_while_a_transition_waits_for_the_lock_keeps_it(any_backend):
    """A reload in the moment a transition waits for the database (not deferred yet) does not undo it
    in the local view either."""
    db = any_backend.database
    with make_pool(db, settings=WAIT, start_flusher=False) as a:
        a.acquire("gemini", M)
        lock = any_backend.lock()
        try:
            recorder = threading.Thread(target=a.record, args=(G[0], M, errors.AUTH))
            recorder.start()
            time.sleep(0.1)  # the recorder waits for the write lock
            assert recorder.is_alive()
            a.reload()  # the store still has the key usable
            with pytest.raises(errors.NoKeyAvailable):
                a.acquire("gemini", M, exclude=frozenset(G[1:]))
            recorder.join()
            with pytest.raises(errors.NoKeyAvailable):
                a.acquire("gemini", M, exclude=frozenset(G[1:]))
        finally:
            lock.release()
        assert a.flush() is True
        a.reload()
        assert a.get(G[0])["status"] == "invalid"


def test_admin_change_under_lock_fails_cleanly_and_changes_nothing(any_backend):
    db = any_backend.database
    with make_pool(db, settings=WAIT, start_flusher=False) as p:
        adm = KeyAdmin(p)
        audit_before = adm.audit()
        lock = any_backend.lock()
        try:
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked"):
                adm.disable(G[0], "now", actor="ops")
            assert 0.3 <= time.monotonic() - start < 1.5
            start = time.monotonic()
            assert [d["id"] for d in p.describe()][:3] == sorted(G)  # reads still answer, promptly
            assert time.monotonic() - start < 1.0
        finally:
            lock.release()
        assert p.get(G[0])["enabled"] is True and adm.audit() == audit_before
        adm.disable(G[0], "now", actor="ops")
        assert p.get(G[0])["enabled"] is False


def test_counters_recorded_while_locked_are_flushed_afterwards(any_backend):
    db = any_backend.database
    with make_pool(db, settings=WAIT, start_flusher=False) as p:
        p.record(G[1], M, errors.OK, latency_ms=10)
        lock = any_backend.lock()
        try:
            assert p.flush(timeout=0.05) is False
            p.record(G[1], M, errors.TRANSIENT, error="later")
        finally:
            lock.release()
        assert p.flush() is True
        d = p.get(G[1])
        assert (d["requests"], d["errors"], d["last_error"], d["latency_ms_avg"]) == (2, 1, "later", 10.0)
