"""The model catalog: prices, context windows and modalities from models.dev and OpenRouter.

``parse`` (pure: both formats → ``Entry``), ``fetch`` (HTTP with ETag / If-Modified-Since), ``refresh``
(one refresher at a time, through a claim in the store), ``view`` (merged entries, target matching, free
pools), ``capabilities`` (pure pre-checks and the token estimate), ``service`` (``Catalog``: one per
worker, what the rest of the gateway calls). Contracts: ``docs/catalog.md``.
"""
