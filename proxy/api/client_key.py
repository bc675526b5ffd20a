"""``GET /v1/key``: what the calling client key may do and has spent (like OpenRouter's ``/api/v1/key``).

``{id, name, team, models, limits: {...}, usage: {period: {kind, start, end}, requests, tokens, cost_usd,
unpriced_requests}, remaining: {budget_usd, tokens}}`` for the client's budget period (else its quota's,
else the calendar month) in ``accounting.timezone``. Read from the usage records: this worker's queue is
flushed first, so other workers' requests show up at most one flush interval (0.5 s) after they ended.
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify

from proxy.api.common import authenticate, gateway
from proxy.clients.auth import HOW_TO
from proxy.errors import Unauthorized

bp = Blueprint("client_key", __name__, url_prefix="/v1")
bp.before_request(authenticate)


@bp.get("/key")
def key_info() -> Response:
    client = g.get("client")
    if client is None:
        raise Unauthorized(f"GET /v1/key describes a client key, and none was sent. {HOW_TO}",
                           code="invalid_api_key")
    summary = gateway().clients.usage.summary(client)
    remaining = summary.pop("remaining")
    return jsonify({
        "id": client.id, "name": client.name, "team": client.team, "models": list(client.models),
        "limits": {
            "rpm": client.rpm, "tpm": client.tpm, "max_concurrent": client.max_concurrent,
            "model_limits": {m.pattern: {"rpm": m.rpm, "tpm": m.tpm} for m in client.model_limits},
            "budget_usd": client.budget_usd, "budget_period": client.budget_period,
            "token_quota": client.token_quota, "quota_period": client.quota_period,
            "expires_at": None if client.expires_at is None
            else datetime.fromtimestamp(client.expires_at, UTC).isoformat(),
        },
        "usage": summary,
        "remaining": remaining,
    })
