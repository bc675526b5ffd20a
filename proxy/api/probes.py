"""Liveness and readiness probes; neither needs auth and neither calls an upstream."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from proxy.catalog.service import catalog_detail
from proxy.store import backend

bp = Blueprint("health", __name__)

WRITE_CHECK_S = 0.2  # /readyz waits at most this long for the database write lock


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    gw = current_app.extensions["keyrelay"]
    if gw.shutting_down.is_set():
        return jsonify({"status": "shutting_down"}), 503
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """``ready`` (200), ``not_ready`` (503), or on PostgreSQL ``degraded`` (200): the server is unreachable
    but this instance serves from its last view and buffers its writes, so a load balancer must keep it
    in rotation (every instance shares that database: taking them all out would be the outage)."""
    gw = current_app.extensions["keyrelay"]
    reasons = []
    if gw.shutting_down.is_set():
        reasons.append("shutting down")
    # readable, migrated and writable (a lock held elsewhere shows here; the wait is cooperative)
    database = gw.config.server.database
    problem = backend.readiness(database, write_timeout_s=WRITE_CHECK_S)
    degraded = (problem is not None and backend.is_postgres(database)
                and problem.startswith("database unreachable"))
    if problem:
        reasons.append(problem)
    if not problem:
        try:
            if gw.pool.usable_count() == 0:
                reasons.append("no usable upstream key: every key is disabled, invalid, open or cooling down")
        except Exception as exc:  # an unusable database surfaces here too
            reasons.append(f"key state unreadable: {type(exc).__name__}")
    serving = not reasons or (degraded and len(reasons) == 1)
    status = "ready" if not reasons else "degraded" if serving else "not_ready"
    body = {"status": status, "reasons": reasons, "database": "degraded" if problem else "ok",
            "config": gw.config.source}
    if not problem:  # details only: a failed catalog refresh never makes the gateway unready
        body["catalog"] = catalog_detail(gw)
    return jsonify(body), 200 if serving else 503
