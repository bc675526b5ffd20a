"""Pure parsers: models.dev's ``api.json`` and OpenRouter's ``GET /api/v1/models`` → one ``Entry`` shape.

- models.dev: the top level is keyed by provider id; ``cost`` is USD per 1M tokens; a missing ``cost``
  (or a missing field in it) is an unknown price, never $0.
- OpenRouter: ``data[]``; ``pricing`` values are strings in USD per token (converted to per 1M here);
  a negative price (``"-1"``, the ``openrouter/auto`` router) is unknown. Every entry is provider
  ``openrouter``.
- ``free``: both the input and the output price are known and exactly zero.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

MODELS_DEV = "models.dev"
OPENROUTER = "openrouter"


class CatalogFormatError(ValueError):
    """The document is neither catalog format (or holds no usable entry)."""


@dataclass(frozen=True)
class Entry:
    provider: str  # catalog provider id: "openrouter", "google", "anthropic", ...
    model: str
    source: str  # models.dev | openrouter
    context: int | None = None  # context window, tokens
    max_output: int | None = None
    input_modalities: tuple[str, ...] = ()  # () = unknown
    output_modalities: tuple[str, ...] = ()
    tools: bool | None = None
    reasoning: bool | None = None
    price_input: float | None = None  # USD per 1M tokens; None = unknown (never $0)
    price_output: float | None = None
    price_cached_input: float | None = None
    price_reasoning: float | None = None
    free: bool = False
    created: float | None = None  # when the model appeared (epoch s): "newest" in free pools
    updated: float | None = None  # when this copy was fetched
    name: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for k in ("input_modalities", "output_modalities"):
            known[k] = tuple(known.get(k) or ())
        return cls(**known)


def detect(doc: Any) -> str:
    """Which format ``doc`` is: ``openrouter`` (``{"data": [...]}``) or ``models.dev`` (providers)."""
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return OPENROUTER
    if isinstance(doc, dict) and doc and all(isinstance(v, dict) and isinstance(v.get("models"), dict)
                                             for v in doc.values()):
        return MODELS_DEV
    raise CatalogFormatError("not a models.dev api.json (providers with models) nor an OpenRouter "
                             "model list ({\"data\": [...]})")


def parse(doc: Any, source: str | None = None, updated: float | None = None) -> list[Entry]:
    """Every usable entry of ``doc`` (format detected when ``source`` is None); malformed entries are
    skipped, a document with none is a CatalogFormatError."""
    kind = source or detect(doc)
    entries = parse_openrouter(doc, updated) if kind == OPENROUTER else parse_models_dev(doc, updated)
    if not entries:
        raise CatalogFormatError(f"no usable {kind} entry in the document")
    return entries


# ------------------------------------------------------------------------------------------ OpenRouter


def parse_openrouter(doc: Any, updated: float | None = None) -> list[Entry]:
    items = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise CatalogFormatError("OpenRouter: expected {\"data\": [...]}")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        pricing = _dict(item.get("pricing"))
        arch = _dict(item.get("architecture"))
        top = _dict(item.get("top_provider"))
        params = item.get("supported_parameters")
        params = [p for p in params if isinstance(p, str)] if isinstance(params, list) else None
        pin, pout = _per_token(pricing.get("prompt")), _per_token(pricing.get("completion"))
        out.append(Entry(
            provider=OPENROUTER, model=item["id"], source=OPENROUTER,
            context=_int(item.get("context_length")) or _int(top.get("context_length")),
            max_output=_int(top.get("max_completion_tokens")),
            input_modalities=_strings(arch.get("input_modalities")),
            output_modalities=_strings(arch.get("output_modalities")),
            tools=None if params is None else "tools" in params,
            reasoning=None if params is None else "reasoning" in params,
            price_input=pin, price_output=pout,
            price_cached_input=_per_token(pricing.get("input_cache_read")),
            price_reasoning=_per_token(pricing.get("internal_reasoning")),
            free=pin == 0 and pout == 0,
            created=_num(item.get("created")), updated=updated,
            name=item.get("name") if isinstance(item.get("name"), str) else None,
        ))
    return out


def _per_token(value: Any) -> float | None:
    """An OpenRouter price (a string, USD per token) as USD per 1M tokens; unknown → None."""
    price = _num(value)
    if price is None or price < 0:
        return None
    return round(price * 1_000_000, 9)


# ------------------------------------------------------------------------------------------ models.dev


def parse_models_dev(doc: Any, updated: float | None = None) -> list[Entry]:
    if not isinstance(doc, dict):
        raise CatalogFormatError("models.dev: expected an object keyed by provider id")
    out = []
    for pid, provider in doc.items():
        models = provider.get("models") if isinstance(provider, dict) else None
        if not isinstance(pid, str) or not isinstance(models, dict):
            continue
        for mid, m in models.items():
            if not isinstance(m, dict):
                continue
            model_id = m.get("id") if isinstance(m.get("id"), str) and m.get("id") else mid
            if not isinstance(model_id, str):
                continue
            cost = m.get("cost")
            cost = cost if isinstance(cost, dict) else {}
            limit = _dict(m.get("limit"))
            modalities = _dict(m.get("modalities"))
            pin, pout = _per_million(cost.get("input")), _per_million(cost.get("output"))
            out.append(Entry(
                provider=pid, model=model_id, source=MODELS_DEV,
                context=_int(limit.get("context")), max_output=_int(limit.get("output")),
                input_modalities=_strings(modalities.get("input")),
                output_modalities=_strings(modalities.get("output")),
                tools=_bool(m.get("tool_call")), reasoning=_bool(m.get("reasoning")),
                price_input=pin, price_output=pout,
                price_cached_input=_per_million(cost.get("cache_read")),
                price_reasoning=_per_million(cost.get("reasoning")),
                free=pin == 0 and pout == 0,
                created=_date(m.get("release_date")), updated=updated,
                name=m.get("name") if isinstance(m.get("name"), str) else None,
            ))
    return out


def _per_million(value: Any) -> float | None:
    price = _num(value)
    return None if price is None or price < 0 else price


def _date(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except ValueError:
        try:  # "2025-01" (year and month)
            return datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None


# ------------------------------------------------------------------------------------------ merging


def merge(primary: Entry, other: Entry) -> Entry:
    """``primary`` with the fields it does not know taken from ``other`` (same provider and model).
    Prices come as a pair: when ``primary`` has neither price, both come from ``other``."""
    fill: dict[str, Any] = {}
    for name in ("context", "max_output", "tools", "reasoning", "created", "name"):
        if getattr(primary, name) is None and getattr(other, name) is not None:
            fill[name] = getattr(other, name)
    for name in ("input_modalities", "output_modalities"):
        if not getattr(primary, name) and getattr(other, name):
            fill[name] = getattr(other, name)
    if primary.price_input is None and primary.price_output is None and other.price_input is not None:
        fill.update(price_input=other.price_input, price_output=other.price_output,
                    price_cached_input=other.price_cached_input, price_reasoning=other.price_reasoning,
                    free=other.free)
    return replace(primary, **fill) if fill else primary


def merge_all(entries: list[Entry]) -> dict[tuple[str, str], Entry]:
    """One entry per (provider, model): the provider's own source first (OpenRouter's list for
    ``openrouter``; models.dev for every other provider), the other source filling its gaps."""
    out: dict[tuple[str, str], Entry] = {}
    for e in sorted(entries, key=lambda e: _rank(e)):
        key = (e.provider, e.model)
        out[key] = merge(out[key], e) if key in out else e
    return out


def _rank(e: Entry) -> int:
    own = OPENROUTER if e.provider == OPENROUTER else MODELS_DEV
    return 0 if e.source == own else 1


# ------------------------------------------------------------------------------------------ helpers


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and number > 0 else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
