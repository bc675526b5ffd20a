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
    gw = current_app.extensions["keyrelay"]
    reasons = []
    if gw.shutting_down.is_set():
        reasons.append("shutting down")
    # readable, migrated and writable (a lock held elsewhere shows here; the wait is cooperative)
    problem = backend.readiness(gw.config.server.database, write_timeout_s=WRITE_CHECK_S)
    if problem:
        reasons.append(problem)
    if not problem:
        try:
            if gw.pool.usable_count() == 0:
                reasons.append("no usable upstream key: every key is disabled, invalid, open or cooling down")
        except Exception as exc:  # an unusable database surfaces here too
            reasons.append(f"key state unreadable: {type(exc).__name__}")
    body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons,
            "config": gw.config.source}
    if not problem:  # details only: a failed catalog refresh never makes the gateway unready
        body["catalog"] = catalog_detail(gw)
    return jsonify(body), 200 if not reasons else 503
