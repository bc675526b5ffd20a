"""No input (upstream answers, client-chosen models, imported snapshots) grows key state without limit
or takes a key out of service for longer than ``key_manager.max_cooldown_s``."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
from keys_support import FAST, SECRETS, Clock, make_pool

from proxy import errors
from proxy.config import ConfigError, load_config
from proxy.keys import KeyAdmin, KeySettings, SnapshotError, key_id
from proxy.keys.snapshot import MAX_COUNT, MAX_FAILURES, checksum, validate
from proxy.store.base import MAX_COOLDOWNS_PER_KEY
from tests.stores import Backend

G = [key_id("gemini", s) for s in SECRETS]
M = "gemini-2.5-flash"


@pytest.fixture
def clock():
    return Clock()


def rows(backend: Backend, kid: str) -> int:
    return int(backend.scalar("SELECT COUNT(*) FROM key_cooldowns WHERE key_id=?", (kid,)))


# --- per-model cooldowns per key --------------------------------------------------------------------

def test_1100_models_cooled_on_one_key_keep_at_most_1024_rows(any_backend, clock):
    db = any_backend.database
    with make_pool(db, clock, start_flusher=False) as p:
        for i in range(1100):
            p.record(G[0], f"client-model-{i:04d}", errors.QUOTA, retry_after=600 + i)
        cds = p.get(G[0])["cooldowns"]
        assert len(cds) == MAX_COOLDOWNS_PER_KEY == rows(any_backend, G[0])
        assert "client-model-0000" not in cds and "client-model-1099" in cds  # soonest-expiring went
        assert len(p._cooldowns[G[0]]) == MAX_COOLDOWNS_PER_KEY  # the in-memory view too
    with make_pool(db, clock, start_flusher=False) as q:  # and what another worker loads
        assert len(q.get(G[0])["cooldowns"]) == MAX_COOLDOWNS_PER_KEY


def test_expired_cooldowns_are_dropped_before_live_ones(any_backend, clock):
    db = any_backend.database
    with make_pool(db, clock, start_flusher=False) as p:
        for i in range(MAX_COOLDOWNS_PER_KEY - 1):
            p.record(G[0], f"short-{i:04d}", errors.QUOTA, retry_after=10)
        p.record(G[0], "long", errors.QUOTA, retry_after=3600)
        clock.t += 20  # every "short-*" has ended
        p.record(G[0], "fresh-a", errors.QUOTA, retry_after=60)
        p.record(G[0], "fresh-b", errors.QUOTA, retry_after=60)
        assert set(p.get(G[0])["cooldowns"]) == {"long", "fresh-a", "fresh-b"}
        assert rows(any_backend, G[0]) <= MAX_COOLDOWNS_PER_KEY


# --- max_cooldown_s for upstream answers ----------------------------------------------------------

def test_retry_after_of_ten_days_cools_at_most_max_cooldown(any_database, clock):
    settings = replace(FAST, max_cooldown_s=7200.0)
    with make_pool(any_database, clock, settings=settings, start_flusher=False) as p:
        p.record(G[0], M, errors.QUOTA, retry_after=10 * 86400)
        p.record(G[1], M, errors.QUOTA, retry_after=float("inf"))  # nonsense: the default applies
        d = p.get(G[0])
        assert d["cooldowns"] == {M: 7200.0}
        assert p.get(G[1])["cooldowns"] == {M: FAST.default_cooldown_s}


def test_default_max_cooldown_is_two_days(any_database, clock):
    assert KeySettings().max_cooldown_s == 172800.0
    with make_pool(any_database, clock, start_flusher=False) as p:
        p.record(G[0], M, errors.QUOTA, retry_after=10 * 86400)
        assert p.get(G[0])["cooldowns"] == {M: 172800.0}


def test_max_cooldown_settings_and_config_are_validated(tmp_path):
    with pytest.raises(ValueError, match="max_cooldown_s"):
        KeySettings(max_cooldown_s=0)
    with pytest.raises(ValueError, match="must not exceed max_cooldown_s"):
        KeySettings(default_cooldown_s=600, max_cooldown_s=300)
    base = "providers:\n  - {name: m, type: mock}\n"
    path = tmp_path / "c.yaml"
    path.write_text("key_manager: {max_cooldown_s: 3600}\n" + base)
    assert load_config(path, env={}).key_manager.max_cooldown_s == 3600
    assert load_config(write(tmp_path, base), env={}).key_manager.max_cooldown_s == 172800
    for bad, match in (("10", "key_manager.max_cooldown_s: must be between 60"),
                       ("x", "key_manager.max_cooldown_s: expected a number"),
                       ("99999999", "key_manager.max_cooldown_s: must be between 60")):
        with pytest.raises(ConfigError, match=match):
            load_config(write(tmp_path, f"key_manager: {{max_cooldown_s: {bad}}}\n" + base), env={})
    with pytest.raises(ConfigError, match="default_cooldown_s: must not exceed max_cooldown_s"):
        load_config(write(tmp_path, "key_manager: {max_cooldown_s: 600, default_cooldown_s: 900}\n" + base),
                    env={})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bounds.yaml"
    path.write_text(text)
    return path


# --- snapshot bounds --------------------------------------------------------------------------------

@pytest.fixture
def setup(any_database, clock):
    p = make_pool(any_database, clock, start_flusher=False)
    p.record(G[0], M, errors.QUOTA, retry_after=30)
    for _ in range(3):
        p.record(G[1], M, errors.TRANSIENT)
    adm = KeyAdmin(p)
    yield p, adm, adm.export_snapshot()
    p.close()


def signed(doc: dict) -> dict:
    doc["checksum"] = checksum(doc)
    return doc


def entry(doc: dict, kid: str) -> dict:
    return next(e for e in doc["keys"] if e["id"] == kid)


def test_a_cooldown_of_1e15_is_refused_naming_the_field(setup, clock):
    p, adm, good = setup
    doc = copy.deepcopy(good)
    entry(doc, G[0])["cooldowns"][M] = 1e15
    message = (r"keys\[\d\]\.cooldowns\['gemini-2.5-flash'\] is \d+s in the future,"
               r" more than key_manager.max_cooldown_s \(172800s\)")
    with pytest.raises(SnapshotError, match=message):
        adm.import_snapshot(signed(doc), actor="mallory")
    assert p.get(G[0])["cooldowns"] == {M: 30.0}  # nothing changed
    ok = copy.deepcopy(good)
    entry(ok, G[0])["cooldowns"][M] = clock.t + 172800  # exactly the cap is fine
    adm.import_snapshot(signed(ok), actor="ops")
    assert p.get(G[0])["cooldowns"] == {M: 172800.0}


@pytest.mark.parametrize("mutate, match", [
    (lambda e, now: e["circuit"].update(open_until=now + 3 * 86400),
     r"circuit.open_until is \d+s in the future, more than key_manager.max_cooldown_s"),
    (lambda e, now: e["circuit"].update(probe_at=now + 86400), r"circuit.probe_at is \d+s in the future"),
    (lambda e, now: e["circuit"].update(last_failure_at=1e15),
     r"circuit.last_failure_at is \d+s in the future"),
    (lambda e, now: e.update(health_at=1e12), r"health_at is \d+s in the future"),
    (lambda e, now: e.update(last_used_at=now + 7200), r"last_used_at is \d+s in the future"),
    (lambda e, now: e.update(status_at=now + 7200), r"status_at is \d+s in the future"),
    (lambda e, now: e.update(last_probe_at=now + 7200), r"last_probe_at is \d+s in the future"),
    (lambda e, now: e.update(last_error_at=now + 7200), r"last_error_at is \d+s in the future"),
    (lambda e, now: e["circuit"].update(failures=MAX_FAILURES + 1), r"circuit.failures must be in"),
    (lambda e, now: e["counters"].update(requests=2**63), r"counters.requests must be in"),
    (lambda e, now: e["counters"].update(requests=MAX_COUNT, errors=MAX_COUNT + 1),
     r"counters.errors must be in"),
    (lambda e, now: e["counters"].update(latency_ms_total=1e300), r"counters.latency_ms_total must be in"),
    (lambda e, now: e["counters"].update(requests=1, errors=2),
     r"counters.errors \(2\) exceeds counters.requests"),
    (lambda e, now: e["counters"].update(requests=0, errors=0, latency_samples=1),
     r"counters.latency_samples \(1\) exceeds"),
    (lambda e, now: e.update(weight=1e9), r"weight must be in"),
    (lambda e, now: e.update(weight_override=-1), r"weight_override must be in"),
    (lambda e, now: e.update(health=-0.1), r"health must be in"),
    (lambda e, now: e.update(label="x" * 1001), r"label must be at most 1000 characters"),
    (lambda e, now: e.update(last_error="x" * 5000), r"last_error must be at most 1000 characters"),
    (lambda e, now: e["cooldowns"].update({"m" * 300: now + 1}), r"model name longer than 256"),
    (lambda e, now: e["cooldowns"].update({f"m{i}": now + 1 for i in range(1025)}), r"has 102\d models"),
])
def test_out_of_range_snapshot_values_are_refused(setup, clock, mutate, match):
    p, adm, good = setup
    doc = copy.deepcopy(good)
    mutate(entry(doc, G[1]), clock.t)
    before = adm.export_snapshot()
    with pytest.raises(SnapshotError, match=match):
        adm.import_snapshot(signed(doc), actor="mallory")
    assert adm.export_snapshot()["keys"] == before["keys"]


def test_snapshot_bounds_follow_the_configured_max_cooldown(setup, clock):
    _, _, good = setup
    doc = copy.deepcopy(good)
    entry(doc, G[0])["cooldowns"][M] = clock.t + 7200
    validate(signed(doc), now=clock.t)  # within the default two days
    with pytest.raises(SnapshotError, match=r"max_cooldown_s \(3600s\)"):
        validate(doc, now=clock.t, max_cooldown_s=3600)


def test_too_many_keys_are_refused(setup):
    _, _, good = setup
    doc = copy.deepcopy(good)
    template = doc["keys"][0]
    doc["keys"] = [{**copy.deepcopy(template), "id": f"k_{i:010x}"} for i in range(10_001)]
    with pytest.raises(SnapshotError, match="at most 10000"):
        validate(signed(doc))
