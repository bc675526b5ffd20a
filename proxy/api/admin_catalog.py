"""``/admin/api/catalog`` (routes on ``proxy.api.admin.api``: bearer admin token).

``GET /admin/api/catalog?provider=&free=true&q=&limit=`` → ``{"entries": [...], "count", "sources"}``:
merged entries (prices in USD per 1M tokens), filtered by catalog provider id, free or not, and a
case-insensitive substring of the model id or name; ``sources`` is each source's state (last success,
last error, entry count). ``POST /admin/api/catalog/refresh`` refreshes every configured source now:
``{"refreshed": {source: ok | not_modified | error}, "sources"}``, or 409 ``refresh_in_progress`` while
another worker refreshes.
"""
from __future__ import annotations

from flask import Response, jsonify, request

from proxy.api.admin import api
from proxy.api.common import gateway
from proxy.errors import BadRequest, GatewayError

MAX_LIMIT = 5000


@api.get("/catalog")
def catalog_entries() -> Response:
    args = request.args
    free = args.get("free")
    if free not in (None, "", "true", "false"):
        raise BadRequest("Bad 'free': expected true or false.", code="invalid_parameter", param="free")
    try:
        limit = int(args.get("limit", "500"))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except ValueError:
        raise BadRequest(f"Bad 'limit': expected a whole number from 1 to {MAX_LIMIT}.",
                         code="invalid_parameter", param="limit") from None
    catalog = gateway().catalog
    entries = catalog.view().search(args.get("provider") or None, None if not free else free == "true",
                                    args.get("q") or None, limit)
    return jsonify({"entries": [e.to_json() for e in entries], "count": len(entries),
                    "sources": catalog.status()})


@api.post("/catalog/refresh")
def catalog_refresh() -> Response:
    catalog = gateway().catalog
    if not gateway().config.catalog.sources:
        raise BadRequest("No catalog source is configured (catalog.sources is empty).",
                         code="no_catalog_source")
    results = catalog.refresh(force=True)
    if results is None:
        raise GatewayError("Another worker is refreshing the catalog right now; try again shortly.",
                           status=409, code="refresh_in_progress")
    catalog.reload()
    return jsonify({"refreshed": results, "sources": catalog.status()})
