"""The cache's rows (proxy/store/cache.py) and ResponseCache on both store backends (a real SQLite
file, a real PostgreSQL database), with an injected clock: TTL, least-recently-used eviction by
entries and by bytes, totals, clear."""
from __future__ import annotations

import json
from typing import cast

import pytest

from proxy.cache.service import ResponseCache
from proxy.clients.model import Client
from proxy.config import parse_config
from proxy.store.cache import CacheTx


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(any_store):
    return any_store


def put(store, key, size=10, now=0.0, ttl=100.0, max_entries=3, max_bytes=10**6):
    with store.transaction() as tx:
        return cast(CacheTx, tx).cache_put(key, "/e", "m", b"x" * size, now, now + ttl, max_entries,
                                           max_bytes)


def get(store, key, now=0.0):
    """A lookup as ResponseCache makes it: a read, then its use written (here at once)."""
    with store.snapshot() as tx:
        row = cast(CacheTx, tx).cache_get(key)
    live = row is not None and row[1] > now
    with store.transaction() as tx:
        cast(CacheTx, tx).cache_touch({key: (now, 1)} if live else {}, {"hits" if live else "misses": 1},
                                      [key] if row is not None and not live else [], now)
    return row[0] if live else None


def totals(store):
    with store.snapshot() as tx:
        return cast(CacheTx, tx).cache_totals()


def test_ttl(store):
    put(store, "a", now=0, ttl=10)
    assert get(store, "a", now=9.99) == b"x" * 10
    assert get(store, "a", now=10) is None  # expired: deleted
    t = totals(store)
    assert (t["entries"], t["bytes"], t["hits"], t["misses"], t["expired"]) == (0, 0, 1, 1, 1)


def test_an_expired_entry_replaced_meanwhile_is_kept(store):
    put(store, "a", now=0, ttl=10)
    put(store, "a", now=11, ttl=10)  # refreshed by another worker
    with store.transaction() as tx:
        cast(CacheTx, tx).cache_touch({}, {}, ["a"], now=12)
    assert get(store, "a", now=12)


def test_lru_eviction_by_entries(store):
    for i, k in enumerate("abc"):
        put(store, k, now=i)
    assert get(store, "a", now=3)  # a is now the most recently used; b the least
    assert put(store, "d", now=4) == 1
    assert get(store, "b", now=5) is None
    assert all(get(store, k, now=6) for k in "acd")
    t = totals(store)
    assert (t["entries"], t["bytes"], t["evictions"]) == (3, 30, 1)


def test_an_older_use_never_moves_an_entry_back(store):
    put(store, "a", now=5)
    with store.transaction() as tx:
        cast(CacheTx, tx).cache_touch({"a": (1.0, 1)}, {}, [], now=6)
        assert tx._run("SELECT used_at, hits FROM cache_entries").fetchone()[:] == (5.0, 1)


def test_lru_eviction_by_bytes(store):
    put(store, "a", size=40, now=0, max_bytes=100)
    put(store, "b", size=40, now=1, max_bytes=100)
    assert put(store, "c", size=50, now=2, max_bytes=100) == 1  # a goes: 40 + 50 <= 100
    assert get(store, "a", now=3) is None and get(store, "b", now=3) and get(store, "c", now=3)
    assert totals(store)["bytes"] == 90


def test_replacing_an_entry_keeps_the_totals_exact(store):
    put(store, "a", size=10)
    put(store, "a", size=25, now=1)
    t = totals(store)
    assert (t["entries"], t["bytes"], t["stores"]) == (1, 25, 2)
    with store.snapshot() as tx:
        assert tx._run("SELECT COUNT(*), SUM(bytes) FROM cache_entries").fetchone()[:] == (1, 25)


def test_expired_entries_are_purged_by_stores(store):
    put(store, "old", now=0, ttl=1)
    put(store, "new", now=5)
    t = totals(store)
    assert (t["entries"], t["expired"], t["evictions"]) == (1, 1, 0)


def test_clear(store):
    put(store, "a")
    put(store, "b")
    with store.transaction() as tx:
        assert cast(CacheTx, tx).cache_clear() == 2
    assert (totals(store)["entries"], totals(store)["bytes"]) == (0, 0)
    assert get(store, "a") is None


def cache_config(**cache):
    return parse_config({"providers": [{"name": "mock", "type": "mock"}],
                         "models": [{"name": "m", "targets": [{"provider": "mock", "model": "x"}]}],
                         "cache": {"enabled": True, **cache}})


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"id": "1", "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "yo"}}]}
ALICE, BOB = Client("c_alice", "alice"), Client("c_bob", "bob")


def test_service_ttl_header_and_injected_clock(store):
    clock = Clock()
    cache = ResponseCache(cache_config(ttl_s=60), store, clock)
    miss = cache.begin("/v1/chat/completions", BODY, {"x-keyrelay-cache-ttl": "5"}, ALICE, "m")
    assert miss.status == "MISS" and miss.keep(ANSWER) is ANSWER
    clock.now += 4.9
    hit = cache.begin("/v1/chat/completions", BODY, {}, ALICE, "m")
    assert hit.status == "HIT" and hit.answer == ANSWER
    assert hit.headers()["x-keyrelay-cache-key"] == miss.key[:16]
    clock.now += 0.2
    assert cache.begin("/v1/chat/completions", BODY, {}, ALICE, "m").status == "MISS"


def test_service_scopes(store):
    for scope, bob_sees in (("client", False), ("shared", True)):
        cache = ResponseCache(cache_config(scope=scope), store, Clock())
        cache.clear()
        cache.begin("/v1/chat/completions", BODY, {}, ALICE, "m").keep(ANSWER)
        assert (cache.begin("/v1/chat/completions", BODY, {}, BOB, "m").status == "HIT") is bob_sees
        assert cache.begin("/v1/chat/completions", BODY, {}, ALICE, "m").status == "HIT"


def test_service_refresh_bypass_and_limits(store):
    cache = ResponseCache(cache_config(max_bytes=100), store, Clock())
    bypass = cache.begin("/v1/chat/completions", BODY, {"Cache-Control": "no-store"}, ALICE, "m")
    assert bypass.status == "BYPASS" and not bypass.storing and bypass.key is None
    refresh = cache.begin("/v1/chat/completions", BODY, {"Cache-Control": "no-cache"}, ALICE, "m")
    assert refresh.status == "REFRESH" and refresh.headers() == {"x-keyrelay-cache": "REFRESH"}
    refresh.keep({"big": "x" * 200})  # larger than the whole cache: not stored
    assert cache.stats()["entries"] == 0
    refresh.keep(ANSWER)
    assert cache.begin("/v1/chat/completions", BODY, {}, ALICE, "m").answer == ANSWER
    stats = cache.stats()
    assert stats["hit_ratio"] == 1.0 and stats["entries"] == 1 and stats["max_bytes"] == 100


def test_service_batches_uses_and_a_store_applies_them_before_evicting(store):
    clock = Clock()
    cache = ResponseCache(cache_config(max_entries=2), store, clock)
    other = ResponseCache(cache_config(max_entries=2), store, clock)  # a second worker
    bodies = [{**BODY, "messages": [{"role": "user", "content": str(i)}]} for i in range(3)]

    def look(c, i):
        return c.begin("/v1/chat/completions", bodies[i], {}, None, "m")

    look(cache, 0).keep(ANSWER)
    clock.now += 1
    look(cache, 1).keep(ANSWER)
    clock.now += 1
    assert look(other, 0).status == "HIT"  # 0 is now used more recently than 1, in other's batch
    with store.snapshot() as tx:
        assert cast(CacheTx, tx).cache_totals()["hits"] == 0  # not written yet
    assert other.flush()
    clock.now += 1
    look(cache, 2).keep(ANSWER)  # evicts the least recently used: 1
    assert [look(cache, i).status for i in (0, 2, 1)] == ["HIT", "HIT", "MISS"]  # cache's batch: unwritten
    clock.now += 0.5
    assert look(other, 0).status == "HIT"
    clock.now += 1
    look(other, 1).keep(ANSWER)  # other's own use of 0 goes in first: 2 is evicted, not 0
    assert [look(other, i).status for i in (0, 1, 2)] == ["HIT", "HIT", "MISS"]
    cache.close()
    other.close()
    t = cache.stats()
    assert (t["hits"], t["misses"], t["evictions"]) == (6, 6, 2)


def test_service_flush_keeps_the_batch_when_the_store_is_locked(store, any_backend):
    cache = ResponseCache(cache_config(), store, Clock())
    cache.begin("/v1/chat/completions", BODY, {}, None, "m").keep(ANSWER)
    assert cache.begin("/v1/chat/completions", BODY, {}, None, "m").status == "HIT"
    holder = any_backend.open()  # another worker
    with holder.transaction():
        assert cache.flush(timeout=0.05) is False  # another connection holds the write lock
    assert cache.flush() is True
    assert cache.stats()["hits"] == 1
    holder.close()


def test_a_stream_is_stored_only_when_it_ended_complete(store):
    from proxy.cache.replay import replay_chunks, replay_events
    from proxy.errors import UpstreamError

    completion = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "hello", "refusal": None}}]}
    cache = ResponseCache(cache_config(), store, Clock())

    def begin(i: int):
        return cache.begin("/v1/chat/completions", {**BODY, "n": i}, {}, None, "m")

    def failing():
        yield from replay_chunks(completion)[:1]
        raise UpstreamError("upstream went away", outcome="transient")

    gone = begin(1).keep_chunks(iter(replay_chunks(completion)))
    next(gone)
    gone.close()  # the client went away
    broken = begin(2).keep_chunks(failing())
    with pytest.raises(UpstreamError):
        list(broken)
    cut = begin(3).keep_chunks(iter(replay_chunks(completion)[:1]))  # ended without a finish reason
    assert len(list(cut)) == 1
    whole = begin(4).keep_chunks(iter(replay_chunks(completion)))
    assert list(whole) == replay_chunks(completion)
    assert [begin(i).status for i in (1, 2, 3, 4)] == ["MISS", "MISS", "MISS", "HIT"]
    assert begin(4).answer == completion

    message = {"id": "msg", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
               "stop_sequence": None, "content": [{"type": "text", "text": "hi"}],
               "usage": {"input_tokens": 1, "output_tokens": 1}}
    frames = [f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in replay_events(message)]
    error = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n'
    list(begin(5).keep_frames(iter([*frames[:3], error])))
    list(begin(6).keep_frames(iter(frames)))
    assert [begin(i).status for i in (5, 6)] == ["MISS", "HIT"]
    assert begin(6).answer == message
