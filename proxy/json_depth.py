"""How deep client JSON may nest: one bound for request bodies and for JSON embedded in strings.

orjson reads 1024 levels but writes only 254, and Python's json raises RecursionError near 1000, so a
deep body could be accepted and then fail while the upstream request is written. Everything a client
sends is held to MAX_DEPTH levels instead (real requests stay far below).
"""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


def within_depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests at most ``limit`` levels of containers (a scalar is level 0)."""
    return type(value) not in (dict, list) or (limit > 0 and _within(value, limit - 1))


def _within(container: Any, budget: int) -> bool:
    """True when the containers inside ``container`` nest at most ``budget`` levels below it."""
    for child in container.values() if type(container) is dict else container:
        if (type(child) is dict or type(child) is list) and (budget == 0 or not _within(child, budget - 1)):
            return False
    return True


def loads_embedded(text: str) -> Any:
    """JSON a client put inside a string (tool call arguments, a tool result), parsed like ``json.loads``;
    ValueError also when it nests deeper than MAX_DEPTH levels."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not within_depth(value):
        raise ValueError("JSON nested too deeply")
    return value
