"""``GET /admin/api/cache`` (counts, size, hit ratio) and ``DELETE /admin/api/cache`` (clear every
entry, audited); routes on ``proxy.api.admin.api``, so the admin bearer token guards them."""
from __future__ import annotations

import logging

from flask import Response, jsonify

from proxy.api.admin import actor, api
from proxy.api.common import gateway

log = logging.getLogger("keyrelay")


@api.get("/cache")
def cache_stats() -> Response:
    return jsonify(gateway().cache.stats())


@api.delete("/cache")
def cache_clear() -> Response:
    gw = gateway()
    cleared = gw.cache.clear()
    gw.keys.audit_event(actor(), "cache_clear", {"entries": cleared}, {"entries": 0})
    log.info("response cache cleared", extra={"event": "cache_clear", "actor": actor(), "entries": cleared})
    return jsonify({"cleared": cleared})
