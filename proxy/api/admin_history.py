"""``GET /admin/api/keys/{id}/history`` and ``GET /admin/api/history``: per key and model rollups
(routes on ``proxy.api.admin.api``, so the admin bearer token guards them).

Query: ``window`` (how far back from now, default ``24h``, at most ``30d``), ``step`` (bucket size,
default ``5m``, whole minutes; past ``48h`` whole hours), ``model`` (an upstream model) and, for the
pool, ``provider`` and ``by=key`` (adds ``keys``: per key ``[requests, ok]`` per point, for
sparklines). The answer: ``points`` (one per step: requests, ok, errors by outcome, http_429,
tokens, latency avg / p50 / p95 / max), ``totals``, and ``periods`` (cooldowns per model and open
circuits overlapping the window). Method and retention: ``proxy/keys/history.py``, docs/dashboard.md.
This worker's batch is flushed first; other workers' lag by at most their flush interval (0.25 s).
"""
from __future__ import annotations

import time

from flask import Response, jsonify, request

from proxy.api.admin import api, one_key
from proxy.api.common import gateway
from proxy.errors import BadRequest
from proxy.keys import history_jobs
from proxy.keys.pool import VIEW_FLUSH_WAIT_S

DEFAULT_WINDOW, DEFAULT_STEP = "24h", "5m"
MAX_FILTER_LEN = 200


def _filter(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None and (not value or len(value) > MAX_FILTER_LEN):
        raise BadRequest(f"Invalid '{name}': 1 to {MAX_FILTER_LEN} characters.", param=name,
                         code="invalid_parameter")
    return value


def _answer(by_key: bool = False, **filters: str | None) -> Response:
    gw = gateway()
    window = request.args.get("window", DEFAULT_WINDOW)
    step = request.args.get("step", DEFAULT_STEP)
    gw.pool.flush(timeout=VIEW_FLUSH_WAIT_S)  # this worker's latest attempts are in it
    try:
        out = history_jobs.read(gw.pool.store, time.time(), window, step, by_key=by_key, **filters)
    except ValueError as exc:
        param = "window" if "'window'" in str(exc) else "step"
        raise BadRequest(str(exc), param=param, code="invalid_parameter") from None
    return jsonify({**filters, **out})


@api.get("/keys/<kid>/history")
def key_history(kid: str) -> Response:
    one_key(kid)  # 404 for an unknown key
    return _answer(key_id=kid, model=_filter("model"))


@api.get("/history")
def pool_history() -> Response:
    by = request.args.get("by")
    if by not in (None, "key"):
        raise BadRequest("Invalid 'by': only 'key' (adds per-key requests and ok per point).", param="by",
                         code="invalid_parameter")
    return _answer(by_key=by == "key", provider=_filter("provider"), model=_filter("model"))
