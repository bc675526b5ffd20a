"""The inspector's API, admin token only: ``GET /admin/api/inspect`` (newest first), ``GET
/admin/api/inspect/<id>``, ``DELETE /admin/api/inspect``, ``GET /admin/api/inspect.har``; the same HAR at
``GET /v1/inspect`` and the clearing at ``DELETE /v1/inspect``.

Query (list and HAR): ``limit`` (1..10000; default 100 for the list, every entry for the HAR), ``model``
(as clients asked for it), ``client`` (client id), ``status`` (``429``, ``4xx`` or ``500-599``), ``since``
(epoch seconds or an ISO-8601 date-time). A bad parameter is a 400 naming it.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
from flask import Blueprint, Response, jsonify, request

from proxy.api import admin
from proxy.api.admin import api
from proxy.api.common import gateway
from proxy.errors import BadRequest, NotFound
from proxy.inspect.har import har

MAX_LIMIT = 10000
bp = Blueprint("inspect", __name__, url_prefix="/v1")
bp.before_request(admin._authenticate)  # noqa: SLF001 - the admin bearer token, as /admin/api checks it
bp.after_request(admin._no_store)  # noqa: SLF001


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(f"Bad '{param}': {message}", code="invalid_parameter", param=param)


def _status(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    v = value.strip().lower()
    if re.fullmatch(r"[1-5]xx", v):
        return int(v[0]) * 100, int(v[0]) * 100 + 99
    m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", v)
    if not m:
        raise _bad("status", "expected a status (429), a class (4xx) or a range (500-599)")
    low = int(m.group(1))
    return low, int(m.group(2) or low)


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _bad("since", "expected epoch seconds or an ISO-8601 date-time") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _limit(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad("limit", f"expected an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _query(default_limit: int, docs: bool = False) -> list[dict]:
    args = request.args
    return gateway().inspector.entries(
        _limit(default_limit), model=args.get("model") or None, client_id=args.get("client") or None,
        status=_status(args.get("status")), since=_since(args.get("since")), docs=docs)


def _summary(row: dict) -> dict:
    return {"id": row["id"], "started_at": row["at"], "request_id": row["request_id"],
            "model": row["model"] or None, "client_id": row["client_id"] or None, "route": row["route"],
            "status": row["status"], "outcome": row["outcome"], "duration_ms": row["duration_ms"],
            "bytes": row["bytes"]}


def _har_response() -> Response:
    rows = _query(gateway().config.inspector.max_entries, docs=True)
    docs = [orjson.loads(r["doc"]) for r in rows]
    body = orjson.dumps(har(docs, request.host_url))
    resp = Response(body, mimetype="application/json")
    resp.headers["Content-Disposition"] = 'attachment; filename="keyrelay.har"'
    return resp


def _clear() -> Response:
    return jsonify({"deleted": gateway().inspector.clear()})


@api.get("/inspect")
def list_entries() -> Response:
    rows = _query(100)
    return jsonify({"object": "list", "data": [_summary(r) for r in rows],
                    "enabled": gateway().config.inspector.enabled, **gateway().inspector.totals()})


@api.get("/inspect/<int:entry_id>")
def get_entry(entry_id: int) -> Response:
    row = gateway().inspector.entry(entry_id)
    if row is None:
        raise NotFound(f"No captured transaction with id {entry_id}. GET /admin/api/inspect lists them.",
                       code="capture_not_found")
    return jsonify({**_summary(row), "transaction": orjson.loads(row["doc"])})


api.add_url_rule("/inspect", "clear_entries", _clear, methods=["DELETE"])
api.add_url_rule("/inspect.har", "export_har", _har_response, methods=["GET"])
bp.add_url_rule("/inspect", "har", _har_response, methods=["GET"])
bp.add_url_rule("/inspect", "clear", _clear, methods=["DELETE"])
