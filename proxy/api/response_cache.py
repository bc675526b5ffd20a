"""The response cache at the data-plane endpoints (``proxy.cache``): a lookup after admission, the
HIT answer, the ``x-keyrelay-cache*`` headers on every answer of a cacheable endpoint."""
from __future__ import annotations

from flask import Response, g, request

from proxy.api.common import gateway
from proxy.cache.service import Lookup


def begin(body: dict, endpoint: str | None = None) -> Lookup:
    """After ``start_trace`` (the request is admitted: a hit counts toward the client's rate limits):
    the cache's plan and, on a HIT, the stored answer (the trace is marked ``cached``). ``endpoint``
    (part of the key) defaults to the request's path."""
    look = gateway().cache.begin(endpoint or request.path, body, request.headers, g.get("client"), g.model)
    g.cache_lookup = look
    if look.hit:
        g.trace.cached = True
    return look


def hit(look: Lookup) -> Response:
    """The stored answer as it was given (JSON)."""
    return Response(look.raw, mimetype="application/json")


def add_headers(resp: Response) -> Response:
    """``after_request`` of the data-plane blueprints."""
    look = g.get("cache_lookup")
    if look is not None:
        resp.headers.update(look.headers())
    return resp
