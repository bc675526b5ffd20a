"""The cache key (proxy/cache/key.py): every field that can change the answer changes it; nothing else."""
from __future__ import annotations

import copy

import pytest

from proxy.cache.key import IGNORED, cache_key, canonical

CHAT = "/v1/chat/completions"
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def key(body: dict, endpoint: str = CHAT, scope: str = "c_1") -> str:
    return cache_key(endpoint, body, scope)


def test_canonical_form_is_sorted_and_compact():
    assert canonical(CHAT, {"b": 1, "a": {"y": [1, 2], "x": None}}, "s") == (
        b'{"body":{"a":{"x":null,"y":[1,2]},"b":1},"endpoint":"/v1/chat/completions","scope":"s"}')


def test_key_order_and_integral_floats_do_not_matter():
    shuffled = {"max_tokens": 10, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert key(shuffled) == key(BASE)
    assert key({**BASE, "temperature": 1.0}) == key({**BASE, "temperature": 1})
    assert len(key(BASE)) == 64 and int(key(BASE), 16) >= 0


@pytest.mark.parametrize("field,value", [
    ("model", "other"), ("messages", [{"role": "user", "content": "hi!"}]), ("max_tokens", 11),
    ("tool_choice", "required"), ("response_format", {"type": "json_object"}), ("seed", 7),
    ("temperature", 0.5), ("top_p", 0.9), ("reasoning_effort", "high"), ("tools", []), ("n", 2),
])
def test_every_answer_field_changes_the_key(field, value):
    assert key({**BASE, field: value}) != key(BASE)


def test_an_omitted_field_is_not_its_default():
    assert key({**BASE, "temperature": 0}) != key(BASE)
    assert key({**BASE, "n": 1}) != key(BASE)


def test_delivery_and_labelling_fields_are_ignored():
    assert IGNORED == {"stream", "stream_options", "user", "metadata"}
    noisy = {**BASE, "stream": True, "stream_options": {"include_usage": True}, "user": "u-1",
             "metadata": {"run": "42"}}
    assert key(noisy) == key(BASE)


def test_nested_changes_count():
    changed = copy.deepcopy(BASE)
    changed["messages"][0]["content"] = [{"type": "text", "text": "hi"}]
    assert key(changed) != key(BASE)


def test_endpoint_and_scope_are_part_of_the_key():
    assert key(BASE, endpoint="/v1/messages") != key(BASE)
    assert key(BASE, scope="c_2") != key(BASE)
    assert key(BASE, scope="") != key(BASE)
