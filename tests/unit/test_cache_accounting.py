"""A hit is free: no tokens to settle, $0 (proxy/clients/limits.py, proxy/clients/gate.py)."""
from __future__ import annotations

from proxy.clients.limits import used_tokens
from proxy.clients.model import Client, Finished, Usage


def finished(**kw: object) -> Finished:
    base = dict(at=0.0, request_id="r", endpoint="/v1/chat/completions", client=Client("c_1", "a"),
                model="m", provider=None, upstream_model=None, key_id=None, status=200, outcome=None,
                usage=None, latency_ms=1.0, first_byte_ms=None, stream=False)
    return Finished(**{**base, **kw})  # type: ignore[arg-type]


def test_a_hit_settles_to_no_tokens():
    assert used_tokens(finished(cached=True), 500) == 0
    assert used_tokens(finished(cached=True, stream=True, streamed_chars=400), 500) == 0
    assert used_tokens(finished(), 500) == 500  # an uncached 2xx without usage: the estimate
    assert used_tokens(finished(usage=Usage(10, 5)), 500) == 15


def test_a_hit_costs_nothing(any_store):
    from proxy.clients.gate import Gate
    from proxy.config import parse_config

    config = parse_config({"providers": [{"name": "mock", "type": "mock"}], "prices": {"*": {"input": 1,
                                                                                            "output": 1}}})
    gate = Gate(config, any_store)
    costs: list = []
    gate.usage.record = lambda done, cost: costs.append((done.cached, cost))  # type: ignore[method-assign]
    gate.finish(finished(cached=True, usage=Usage(1000, 1000)))
    gate.finish(finished(usage=Usage(1000, 1000)))
    assert costs == [(True, 0.0), (False, 0.002)]
    gate.close()
