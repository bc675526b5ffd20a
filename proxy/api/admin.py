"""The /admin API (JSON, bearer token, constant-time compare)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from proxy.errors import Forbidden, Unauthorized

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _authenticate() -> None:
    token = current_app.extensions["keyrelay"].config.server.admin_token
    if not token:
        raise Forbidden(
            "The admin API is disabled: set server.admin_token (KEYRELAY_ADMIN_TOKEN) to enable it.",
            code="admin_disabled",
        )
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized(
            "Missing or wrong admin token: send 'Authorization: Bearer <admin token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


@bp.get("/api/keys")
def list_keys() -> Response:
    return jsonify({"keys": current_app.extensions["keyrelay"].pool.describe()})
