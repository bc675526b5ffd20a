"""The cache key: SHA-256 over a canonical form of the endpoint, the request and the scope (pure).

Canonical: JSON with sorted keys and no insignificant whitespace; a number with an integral value is
written as an integer (``1.0`` and ``1`` are the same JSON number). Every body field counts except the
ones that change how an answer is delivered or labelled, never what it says (``IGNORED``). An omitted
field stays omitted: it is not the same as its default (no guessing ``temperature`` 0)."""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

IGNORED = frozenset({"stream", "stream_options", "user", "metadata"})
SHORT = 16  # hex characters shown in x-keyrelay-cache-key


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def canonical(endpoint: str, body: dict, scope: str) -> bytes:
    """The bytes the key hashes: ``{"body": …, "endpoint": …, "scope": …}`` in canonical JSON."""
    fields = {k: v for k, v in body.items() if k not in IGNORED}
    doc = {"body": _normal(fields), "endpoint": endpoint, "scope": scope}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def cache_key(endpoint: str, body: dict, scope: str) -> str:
    """64 hex characters."""
    return hashlib.sha256(canonical(endpoint, body, scope)).hexdigest()
