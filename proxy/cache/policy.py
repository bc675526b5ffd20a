"""What the cache does for one request (pure): the settings of its model, the client's directives.

* Settings: a model's own ``models[].cache`` (merged over the global one at load), else the global
  ``cache`` when it is enabled and its ``models`` globs (empty: all) match the client-facing name.
* ``Cache-Control: no-store``: BYPASS (no lookup, no store); ``no-cache``: REFRESH (no lookup, the new
  answer is stored); no-store wins when both are given.
* ``x-keyrelay-cache-ttl: N`` (whole seconds): this entry's TTL, capped by ``ttl_s``; 0 stores nothing.
* ``deterministic_only``: only a request with ``temperature: 0`` or a ``seed`` is cached (else BYPASS).
"""
from __future__ import annotations

from dataclasses import dataclass

from proxy import model_names
from proxy.config import CacheConfig, Config
from proxy.errors import BadRequest

HIT, MISS, BYPASS, REFRESH = "HIT", "MISS", "BYPASS", "REFRESH"
TTL_HEADER = "x-keyrelay-cache-ttl"
MAX_TTL_HEADER_DIGITS = 12


@dataclass(frozen=True)
class Plan:
    status: str  # MISS (look up first: becomes HIT when found), REFRESH or BYPASS
    settings: CacheConfig | None = None
    ttl_s: float = 0.0

    @property
    def lookup(self) -> bool:
        return self.status == MISS

    @property
    def store(self) -> bool:
        return self.status in (MISS, REFRESH) and self.ttl_s > 0


def any_cache(config: Config) -> bool:
    """Is a response cache configured at all (else requests carry no cache header)?"""
    return config.cache.enabled or any(m.cache is not None and m.cache.enabled for m in config.models)


def settings_for(config: Config, model: str) -> CacheConfig | None:
    """The cache settings for the client-facing model name, or None when it is not cached."""
    m = config.model(model)
    if m is not None and m.cache is not None:
        return m.cache if m.cache.enabled else None
    g = config.cache
    if g.enabled and (not g.models or model_names.matches(model, g.models)):
        return g
    return None


def directives(cache_control: str | None) -> set[str]:
    """The lower-cased directive names of a Cache-Control header (arguments dropped)."""
    if not cache_control:
        return set()
    return {d.split("=", 1)[0].strip().lower() for d in cache_control.split(",") if d.strip()}


def requested_ttl(value: str | None) -> int | None:
    """``x-keyrelay-cache-ttl``: None when absent; BadRequest when not whole seconds."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > MAX_TTL_HEADER_DIGITS:
        raise BadRequest(f"Invalid '{TTL_HEADER}' header: expected whole seconds (0 or more).",
                         code="invalid_header", param=TTL_HEADER)
    return int(text)


def deterministic(body: dict) -> bool:
    """``temperature: 0`` or a ``seed`` in the request as the client sent it."""
    temperature = body.get("temperature")
    zero = isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0
    return zero or body.get("seed") is not None


def plan(settings: CacheConfig | None, body: dict, cache_control: str | None, ttl: str | None) -> Plan:
    """What to do for one request (``settings``: ``settings_for`` its model)."""
    wanted = requested_ttl(ttl)  # a malformed header is the client's 400 even when nothing is cached
    flags = directives(cache_control)
    if settings is None or "no-store" in flags or (settings.deterministic_only and not deterministic(body)):
        return Plan(BYPASS)
    ttl_s = settings.ttl_s if wanted is None else min(float(wanted), settings.ttl_s)
    return Plan(REFRESH if "no-cache" in flags else MISS, settings, ttl_s)
