"""The response cache: exact-match answers shared by every worker (see docs/cache.md).

``key`` (the canonical request key), ``policy`` (settings per model, per-request headers),
``replay`` (stored answer ⇄ stream), ``service`` (the per-worker ``ResponseCache``); SQL in
``proxy/store/cache.py``."""
