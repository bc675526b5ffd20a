"""Snapshot export / import: round trip, refusal of bad documents, no secrets anywhere."""
from __future__ import annotations

import copy
import json

import pytest
from keys_support import SECRETS, SPECS, Clock, make_pool

from proxy import errors
from proxy.keys import KeyAdmin, KeySpec, SnapshotError, key_id
from proxy.keys.snapshot import checksum

G = [key_id("gemini", s) for s in SECRETS]
M = "gemini-2.5-flash"
RETIRED_SECRET = "AIzaSyTEST-secret-retired-0004"


def busy_pool(path, clock):
    """A pool whose keys are in every kind of state, one of them retired."""
    p = make_pool(path, clock, specs=SPECS + [KeySpec("gemini", RETIRED_SECRET)], start_flusher=False)
    p.record(key_id("gemini", RETIRED_SECRET), M, errors.OK, latency_ms=7)
    p.sync(SPECS)
    KeyAdmin(p).disable(G[0], "leaked", actor="ops")
    KeyAdmin(p).set_weight(G[0], 3.5, actor="ops")
    p.record(G[1], M, errors.AUTH, error=f"API key {SECRETS[1]} not valid")
    for _ in range(3):
        p.record(G[2], M, errors.TRANSIENT, latency_ms=30000, error="upstream timeout")
    p.record(G[2], M, errors.QUOTA, retry_after=34.4)
    p.record(G[2], "gemini-2.5-pro", errors.QUOTA, daily=True)
    clock.t += 1.25
    p.record(G[0], M, errors.OK, latency_ms=123.4)
    return p


def strip(doc):
    return {k: v for k, v in doc.items() if k != "exported_at"}


def test_round_trip_through_a_fresh_database_is_identical(any_backend):
    clock = Clock()
    db = any_backend.database
    p = busy_pool(db, clock)
    doc1 = KeyAdmin(p).export_snapshot()
    p.close()
    json.dumps(doc1, allow_nan=False)  # plain JSON
    assert doc1["format"] == "keyrelay.snapshot" and doc1["version"] == 1
    assert len(doc1["keys"]) == 5 and doc1["checksum"] == checksum(doc1)
    clock.t += 5
    q = make_pool(any_backend.fresh().database, clock, start_flusher=False)
    KeyAdmin(q).import_snapshot(copy.deepcopy(doc1), actor="restore-bot")
    doc2 = KeyAdmin(q).export_snapshot()
    assert strip(doc2) == strip(doc1)
    assert doc2["exported_at"] != doc1["exported_at"]
    d = {x["id"]: x for x in q.describe()}
    assert d[G[0]]["enabled"] is False and d[G[0]]["weight"] == 3.5
    assert d[G[1]]["status"] == "invalid" and d[G[2]]["circuit"] == "open"
    assert q.get(key_id("gemini", RETIRED_SECRET))["retired"] is True
    assert {e["action"] for e in KeyAdmin(q).audit()} == {"import"}
    q.close()


def test_no_secret_in_snapshot_or_database_file(any_backend):
    clock = Clock()
    p = busy_pool(any_backend.database, clock)
    text = json.dumps(KeyAdmin(p).export_snapshot())
    p.flush()
    raw = any_backend.dump()
    p.close()
    raw += any_backend.dump()
    for secret in SECRETS + [RETIRED_SECRET]:
        assert secret not in text
        assert secret.encode() not in raw
    assert "***" in text  # the auth error text was scrubbed, not dropped


def refused(pool, doc, match):
    before = KeyAdmin(pool).export_snapshot()
    audit_before = KeyAdmin(pool).audit()
    with pytest.raises(SnapshotError, match=match):
        KeyAdmin(pool).import_snapshot(doc, actor="mallory")
    assert strip(KeyAdmin(pool).export_snapshot()) == strip(before)
    assert KeyAdmin(pool).audit() == audit_before


def resigned(doc):
    doc["checksum"] = checksum(doc)
    return doc


@pytest.fixture
def setup(any_database):
    clock = Clock()
    p = busy_pool(any_database, clock)
    good = KeyAdmin(p).export_snapshot()
    KeyAdmin(p).reset(G[1], actor="ops")  # so an import would visibly change something
    KeyAdmin(p).enable(G[0], actor="ops")
    yield p, good
    p.close()


def test_tampered_snapshot_is_refused(setup):
    p, good = setup
    doc = copy.deepcopy(good)
    doc["keys"][0]["enabled"] = not doc["keys"][0]["enabled"]
    refused(p, doc, "checksum mismatch")


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(version=2), "unsupported snapshot version 2"),
    (lambda d: d.update(version=True), "unsupported snapshot version"),
    (lambda d: d.update(format="other"), "not a keyrelay snapshot"),
    (lambda d: d["keys"][0].update(health=1.5), r"keys\[0\].health must be in"),
    (lambda d: d["keys"][1].update(enabled="yes"), r"keys\[1\].enabled must be true or false"),
    (lambda d: d["keys"][1].update(id="sk-live-123"), r"keys\[1\].id must look like"),
    (lambda d: d["keys"][2]["circuit"].update(state="weird"), r"circuit.state must be one of"),
    (lambda d: d["keys"][2]["circuit"].update(failures=-1), r"circuit.failures must be in"),
    (lambda d: d["keys"][2]["counters"].update(requests=1.5), r"counters.requests must be an integer"),
    (lambda d: d["keys"][2]["cooldowns"].update({"m": "soon"}), r"cooldowns\['m'\] must be a finite number"),
    (lambda d: d["keys"][0].pop("status"), r"keys\[0\] is missing status"),
    (lambda d: d["keys"][0].update(secret="x"), r"keys\[0\] has unknown field"),
    (lambda d: d["keys"].append(copy.deepcopy(d["keys"][0])), "appears twice"),
    (lambda d: d.update(keys={}), "snapshot.keys must be a list"),
    (lambda d: d["keys"][0].update(weight_override=0), "weight_override must be > 0"),
    (lambda d: d["keys"][0].update(provider="openai"), "belongs to provider 'gemini'"),
])
def test_invalid_snapshots_are_refused_and_change_nothing(setup, mutate, match):
    p, good = setup
    doc = copy.deepcopy(good)
    mutate(doc)
    refused(p, resigned(doc), match)


def test_refusal_of_non_documents(setup):
    p, _ = setup
    for doc, match in (([], "must be a JSON object"), ({"format": "keyrelay.snapshot", "version": 1},
                                                          "missing")):
        refused(p, doc, match)


def test_import_is_all_or_nothing(setup, monkeypatch):
    """A failure while applying the third entry rolls back the first two."""
    p, good = setup
    adm = KeyAdmin(p)
    before = adm.export_snapshot()
    real, calls = adm._import_entry, []

    def failing(tx, e, *args):
        calls.append(e["id"])
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(tx, e, *args)
    monkeypatch.setattr(adm, "_import_entry", failing)
    with pytest.raises(RuntimeError):
        adm.import_snapshot(copy.deepcopy(good), actor="x")
    monkeypatch.undo()
    assert strip(adm.export_snapshot()) == strip(before) != strip(good)
    assert not [e for e in adm.audit() if e["action"] == "import"]
    adm.import_snapshot(copy.deepcopy(good), actor="x")
    assert strip(adm.export_snapshot()) == strip(good)
