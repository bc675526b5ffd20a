"""Issue 16: the inspector's pure parts (sampling, redaction, cuts, timings, HAR) and its ring (store,
on both backends)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import jsonschema
import orjson
import pytest

from proxy.config import TargetConfig, parse_config
from proxy.inspect import har, record
from proxy.inspect.capture import AttemptTap, Exchange
from proxy.inspect.ring import sampled
from proxy.inspect.settings import InspectorConfig
from proxy.relay import Attempt, Trace
from proxy.store.inspector import InspectorTx

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "har-1.2.schema.json").read_text())
KEY = "gem-unit-secret-key-0001"
CLIENT_KEY = "kr-unit-client-key-presented"


def settings(**kw: object) -> InspectorConfig:
    cfg = parse_config({"providers": [{"name": "m", "type": "mock"}], "inspector": {"enabled": True, **kw}})
    return cfg.inspector


def test_sampling_is_deterministic_and_about_right():
    ids = [f"req-{i}" for i in range(4000)]
    picked = [i for i in ids if sampled(i, 0.5)]
    assert picked == [i for i in ids if sampled(i, 0.5)]
    assert 0.46 < len(picked) / len(ids) < 0.54
    assert all(sampled(i, 1.0) for i in ids[:50]) and not any(sampled(i, 0.0) for i in ids[:50])
    assert set(i for i in ids if sampled(i, 0.25)) <= set(picked)  # a smaller sample is a subset


def test_redaction_of_headers_urls_and_bodies():
    s = settings(redact=["$.messages[*].content"], max_body_bytes=1000)
    assert record.safe_url(f"https://g/v1beta/models/x:generateContent?alt=sse&key={KEY}") == \
        "https://g/v1beta/models/x:generateContent?alt=sse&key=[REDACTED]"
    headers = [("X-Goog-Api-Key", KEY), ("Authorization", "Bearer x"), ("x-ok", "v")]
    assert record.safe_headers(headers, ()) == \
        [["X-Goog-Api-Key", "[REDACTED]"], ["Authorization", "[REDACTED]"], ["x-ok", "v"]]
    body = orjson.dumps({"messages": [{"role": "user", "content": "private"}], "note": f"key {KEY}"})
    out = record.body_text(body, s, (KEY,))
    assert out is not None
    assert orjson.loads(out["text"]) == {"messages": [{"role": "user", "content": "[REDACTED]"}],
                                         "note": "key [REDACTED]"}
    assert out["truncated"] is False


def test_bodies_past_the_limit_are_cut_and_marked():
    s = settings(max_body_bytes=100)
    out = record.body_text("é" * 300, s, ())
    assert out is not None
    assert out["truncated"] is True and out["size"] == 600 and len(out["text"].encode()) <= 100


def test_sse_events_keep_their_arrival_and_the_limit():
    pieces = [(1.0, b"data: {\"a\":1}\n\nda"), (1.5, b"ta: {\"a\":2}\n"), (2.0, b"\ndata: [DONE]\n\n")]
    assert record.sse_events(pieces) == [(1.0, 'data: {"a":1}'), (2.0, 'data: {"a":2}'),
                                         (2.0, "data: [DONE]")]
    chunks, cut = record.stream_chunks(record.sse_events(pieces), 0.5, settings(max_body_bytes=20), ())
    assert chunks == [{"time_ms": 500.0, "text": 'data: {"a":1}'}] and cut is True


def _exchange(**kw: object) -> Exchange:
    ex = Exchange(request_id="rid-1", model="flash", client_id="c_1", client_headers=[("Authorization",
                  f"Bearer {CLIENT_KEY}"), ("x-trace", "t")], model_transforms=None,
                  provider_transforms={}, store=True, log_bodies=False, keep_bytes=1 << 20,
                  secrets=(CLIENT_KEY,))
    ex.t0, ex.started_at = 100.0, 1_800_000_000.0
    for k, v in kw.items():
        setattr(ex, k, v)
    return ex


def _tap(ex: Exchange, t0: float, status: int, reused: bool, pieces: list, content_type: str) -> AttemptTap:
    tap = AttemptTap(ex, TargetConfig("g", "gemini-2.5-flash"), "k_0123456789", ex.rules_for(
        TargetConfig("g", "gemini-2.5-flash")))
    tap.started_at, tap.t0 = 1_800_000_000.0 + (t0 - 100), t0
    tap.method, tap.url = "POST", f"http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent?key={KEY}"
    tap.t_connected, tap.reused, tap.server_ip = t0 + 0.001, reused, "127.0.0.1"
    tap.raw = f"POST /x HTTP/1.1\r\nhost: h\r\nx-goog-api-key: {KEY}\r\ncontent-length: 2\r\n\r\n{{}}" \
        .encode()
    tap.t_sent, tap.t_head, tap.t_end = t0 + 0.002, t0 + 0.010, t0 + 0.030
    tap.status, tap.headers, tap.pieces = status, {"content-type": content_type}, pieces
    return tap


def test_a_transaction_as_har_validates_and_adds_up():
    ex = _exchange(method="POST", path="/v1/chat/completions", body=b'{"model":"flash","stream":true}',
                   status=200, response_headers=[("Content-Type", "text/event-stream")], stream=True,
                   t_response=100.05, chunks=[(100.05, {"choices": [{"delta": {"content": "hi"}}]}),
                                              (100.06, {"choices": []})])
    ex.attempts = [
        _tap(ex, 100.001, 503, False, [(100.02, b'{"error":{"code":503}}')], "application/json"),
        _tap(ex, 100.020, 200, True, [(100.035, b"data: {\"x\":1}\n\n"), (100.045, b"data: {\"x\":2}\n\n")],
             "text/event-stream"),
    ]
    trace = Trace(attempts=[Attempt("g", "gemini-2.5-flash", "k_0123456789", "transient", 20.0, "boom"),
                            Attempt("g", "gemini-2.5-flash", "k_0123456789", "ok", 30.0)],
                  route=TargetConfig("g", "gemini-2.5-flash"), key_id="k_0123456789")
    secrets = (CLIENT_KEY, KEY)
    doc = record.transaction(ex, trace, 100.07, settings(), secrets)
    data = record.encode(doc, secrets)
    assert KEY.encode() not in data and CLIENT_KEY.encode() not in data
    log = har.har([orjson.loads(data)])
    jsonschema.validate(log, SCHEMA, format_checker=jsonschema.FormatChecker())
    entries = log["log"]["entries"]
    assert [e["_keyrelay"]["attempt"] for e in entries] == [0, 1, 2]
    assert [e["_keyrelay"]["outcome"] for e in entries] == ["ok", "transient", "ok"]
    for e in entries:
        t = e["timings"]
        assert e["time"] == pytest.approx(sum(v for v in t.values() if v >= 0), abs=0.002)
    assert entries[0]["time"] == pytest.approx(70.0, abs=0.01)  # the client's whole exchange
    assert entries[1]["timings"]["connect"] == pytest.approx(1.0, abs=0.01)
    assert entries[2]["timings"]["connect"] == -1  # a reused connection
    assert entries[2]["timings"]["wait"] == pytest.approx(8.0, abs=0.01)
    chunks = entries[2]["response"]["content"]["_chunks"]
    assert [c["time_ms"] for c in chunks] == pytest.approx([15.0, 25.0], abs=0.01)
    assert [c["text"] for c in chunks] == ['data: {"x":1}', 'data: {"x":2}']
    assert [c["time_ms"] for c in entries[0]["response"]["content"]["_chunks"]] == pytest.approx([50.0, 60.0])
    assert entries[1]["request"]["url"].endswith("?key=[REDACTED]")
    assert {"name": "x-goog-api-key", "value": "[REDACTED]"} in entries[1]["request"]["headers"]
    assert {"name": "Authorization", "value": "[REDACTED]"} in entries[0]["request"]["headers"]
    assert entries[1]["serverIPAddress"] == "127.0.0.1"


@pytest.fixture
def store(any_store):
    return any_store


def _rows(n: int, size: int = 10, start: int = 0) -> list[tuple]:
    return [(float(i), f"r{i}", "m", "", None, 200, "ok", 1.0, size, b"x" * size)
            for i in range(start, start + n)]


def test_the_ring_keeps_the_newest_max_entries(store):
    with store.transaction() as tx:
        assert cast(InspectorTx, tx).add_captures(_rows(7), max_entries=5, max_bytes=10**6) == 2
    with store.transaction() as tx:
        cast(InspectorTx, tx).add_captures(_rows(3, start=7), max_entries=5, max_bytes=10**6)
    with store.snapshot() as tx:
        rows = cast(InspectorTx, tx).captures(100)
        assert [r["request_id"] for r in rows] == ["r9", "r8", "r7", "r6", "r5"]
        assert cast(InspectorTx, tx).capture_totals() == {"entries": 5, "bytes": 50}


def test_the_ring_keeps_within_max_bytes(store):
    with store.transaction() as tx:
        cast(InspectorTx, tx).add_captures(_rows(10, size=100), max_entries=1000, max_bytes=350)
    with store.snapshot() as tx:
        assert [r["request_id"] for r in cast(InspectorTx, tx).captures(100)] == ["r9", "r8", "r7"]


def test_ring_filters(store):
    rows = _rows(4)
    rows[1] = (1.0, "r1", "other", "c_9", None, 429, "quota", 1.0, 10, b"y")
    with store.transaction() as tx:
        cast(InspectorTx, tx).add_captures(rows, max_entries=100, max_bytes=10**6)
    with store.snapshot() as tx:
        t = cast(InspectorTx, tx)
        assert [r["request_id"] for r in t.captures(10, model="other")] == ["r1"]
        assert [r["request_id"] for r in t.captures(10, client_id="c_9")] == ["r1"]
        assert [r["request_id"] for r in t.captures(10, status=(400, 499))] == ["r1"]
        assert [r["request_id"] for r in t.captures(10, since=2.0)] == ["r3", "r2"]
        assert [r["request_id"] for r in t.captures(2)] == ["r3", "r2"]
        one = t.capture(t.captures(1)[0]["id"])
        assert one is not None and one["doc"] == b"x" * 10
    with store.transaction() as tx:
        assert cast(InspectorTx, tx).clear_captures() == 4


def test_json_the_redact_paths_cannot_parse_is_not_stored():
    s = settings(redact=["$.messages[*].content"])
    out = record.body_text(b'{"messages": [{"content": "private and cut', s, ())
    assert out is not None and out["text"] == record.UNREDACTABLE and out["truncated"] is True
    event = record.stream_chunks([(1.0, 'data: {"messages": [{"content": "priv')], 0.0, s, ())[0]
    assert event == [{"time_ms": 1000.0, "text": "data: " + record.UNREDACTABLE}]


def test_keys_an_upstream_echoes_in_an_error_are_not_stored():
    ex = _exchange()
    body = b'{"error": {"message": "Incorrect API key: sk-VKMIs***wjh3"}}'
    tap = _tap(ex, 100.0, 401, False, [(100.01, body)], "application/json")
    doc = record.attempt_doc(1, tap, None, settings(), ())
    assert "VKMIs" not in doc["response"]["body"]["text"] and "[REDACTED]" in doc["response"]["body"]["text"]


def _ring(backend, **inspector: object):
    from proxy.inspect.ring import Inspector

    cfg = parse_config({"providers": [{"name": "m", "type": "mock"}],
                        "inspector": {"enabled": True, **inspector}})
    store = backend.open(lock_wait_s=0.2)
    return Inspector(cfg, store), store


def _finish(ins, rid: str) -> None:
    ex = ins.begin(rid, "m", None, {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert ex is not None
    ex.method, ex.path, ex.status, ex.body = "POST", "/v1/chat/completions", 200, b'{"model":"m"}'
    ins.done(ex, None, {})


def test_a_locked_database_keeps_the_captures_for_the_next_flush(any_backend):
    ins, store = _ring(any_backend, max_entries=3)
    for i in range(5):
        _finish(ins, f"lock-{i}")
    with any_backend.lock():
        assert ins.flush() is False and ins.pending() == 5
    assert ins.flush() is True and ins.pending() == 0
    assert [r["request_id"] for r in ins.entries(10)] == ["lock-4", "lock-3", "lock-2"]
    store.close()
    assert CLIENT_KEY.encode() not in any_backend.dump()


def test_the_flush_queue_is_bounded(any_backend, monkeypatch):
    from proxy.inspect import ring

    monkeypatch.setattr(ring, "MAX_QUEUE", 3)
    ins, store = _ring(any_backend)
    for i in range(5):
        _finish(ins, f"q-{i}")
    assert ins.pending() == 3 and ins.dropped == 2
    store.close()


def test_ndjson_streams_are_events_per_line_and_redacted():
    s = settings(redact=["$.message.content"])
    pieces = [(1.0, b'{"message": {"content": "se'), (1.2, b'cret"}}\n{"done": true}\n')]
    events = record.sse_events(pieces, record._LINE_END)
    assert [t for t, _ in events] == [1.2, 1.2]
    chunks, _ = record.stream_chunks(events, 1.0, s, ())
    assert [c["text"] for c in chunks] == ['{"message":{"content":"[REDACTED]"}}', '{"done":true}']
