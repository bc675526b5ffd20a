"""Issue 19, traces: spans from an in-memory exporter for a request that failed over once (the first key
rate-limited by the mock Gemini upstream, over real sockets): the request span continues the client's
traceparent, one attempt span per attempt with its upstream-call child, and each upstream call carried
its own span's traceparent."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.keys.ids import key_id
from proxy.observability.tracing import Tracing
from tests.mock_upstream import MockUpstream, error

KEYS = ["trace-key-alpha-0001", "trace-key-bravo-0002"]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def mock():
    with MockUpstream() as m:
        yield m


def test_failed_over_request_span_tree_continues_traceparent(make_app, mock):
    client = make_app({
        "retry": {"attempts": 3, "backoff_base_s": 0.01, "retry_after_cap_s": 0},
        "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": KEYS}],
        "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]}],
        "tracing": {"enabled": True, "exporter": "console"},  # replaced below by an in-memory exporter
    })
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client.application.extensions["keyrelay"].tracing = Tracing(provider)
    mock.script(key=KEYS[0], behaviour=error(429))

    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    for _ in range(2):  # round robin: one of two requests starts with the rate-limited key
        before = len(mock.calls)
        r = client.post("/v1/chat/completions", headers={"traceparent": traceparent},
                        json={"model": "flash", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.get_json()
        upstream = mock.calls[before:]
        if len(upstream) == 2:
            break
        exporter.clear()
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(server) == 1
    root = server[0]
    assert root.name == "POST /v1/chat/completions"
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE  # the client's trace continues
    assert root.parent is not None and format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["keyrelay.model"] == "flash"
    attempts = sorted((s for s in spans if s.name.startswith("attempt ")), key=lambda s: s.start_time)
    assert [a.name for a in attempts] == ["attempt 1", "attempt 2"]
    assert all(a.parent.span_id == root.context.span_id for a in attempts)
    assert [a.attributes["keyrelay.outcome"] for a in attempts] == ["quota", "ok"]
    assert [a.attributes["keyrelay.key_id"] for a in attempts] == [key_id("gemini", k) for k in KEYS]
    assert [a.attributes["keyrelay.retry"] for a in attempts] == [0, 1]
    calls = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert sorted(by_id[c.parent.span_id].name for c in calls) == ["attempt 1", "attempt 2"]
    assert sorted(c.attributes["http.response.status_code"] for c in calls) == [200, 429]
    # every upstream call carried its own CLIENT span's context as traceparent, in the client's trace
    sent = sorted(call["headers"]["traceparent"] for call in upstream)
    assert sent == sorted(f"00-{CLIENT_TRACE}-{format(c.context.span_id, '016x')}-01" for c in calls)
    assert all(KEYS[0] not in str(s.attributes) and KEYS[1] not in str(s.attributes) for s in spans)
