"""``GET /admin/api/usage``: who spent what (routes on ``proxy.api.admin.api``, so the admin bearer token
guards them).

Query: ``from`` / ``to`` (ISO dates — local days in ``accounting.timezone``, ``to`` inclusive — or ISO
date-times, ``to`` exclusive; default: the last 30 days), ``client`` (id or name), ``model`` (as clients
asked for it), ``group_by`` (``day|client|model|route|key``, several comma-separated; default ``day``;
empty: one total row), ``format=csv``. A bad parameter is a 400 naming it. Rows come from the raw usage
records while they are kept (``accounting.retention_days``), from the daily rollups (per day, client,
model) for earlier days; ``route`` / ``key`` groupings exist only for the raw part. Records reach the
database one flush interval after their request ended (this worker's queue is flushed first).
"""
from __future__ import annotations

import csv
import io

from flask import Response, jsonify, request

from proxy.api.admin import api
from proxy.api.common import gateway
from proxy.errors import BadRequest
from proxy.store.usage import GROUPS

DEFAULT_DAYS = 30
FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
          "cost_usd", "unpriced_requests")


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(f"Bad '{param}': {message}", code="invalid_parameter", param=param)


@api.get("/usage")
def usage_report() -> Response:
    log = gateway().clients.usage
    args = request.args
    now = log.clock()
    try:
        end = log.parse_time(args["to"], end=True) if args.get("to") else now
    except ValueError:
        raise _bad("to", "expected an ISO date (2026-12-01) or date-time (2026-12-01T10:00:00Z)") from None
    try:
        start = log.parse_time(args["from"]) if args.get("from") else end - DEFAULT_DAYS * 86400
    except ValueError:
        raise _bad("from", "expected an ISO date (2026-12-01) or date-time (2026-12-01T10:00:00Z)") from None
    if start >= end:
        raise _bad("from", "must be before 'to'")
    raw_groups = args.get("group_by", "day")
    groups = tuple(g.strip() for g in raw_groups.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise _bad("group_by", f"expected a comma-separated subset of {'|'.join(GROUPS)}")
    fmt = args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise _bad("format", "expected json or csv")
    for name in ("client", "model"):
        value = args.get(name)
        if value is not None and (not value or len(value) > 200):
            raise _bad(name, "expected a non-empty name of at most 200 characters")
    try:
        rows = log.report(start, end, groups, args.get("client"), args.get("model"))
    except ValueError as exc:
        raise _bad("group_by", str(exc)) from None
    if fmt == "csv":
        return _csv(rows, groups)
    return jsonify({"from": log.iso(start), "to": log.iso(end), "group_by": list(groups),
                    "raw_since": log.iso(log.raw_since()), "rows": rows})


def _csv(rows: list[dict], groups: tuple[str, ...]) -> Response:
    cols: list[str] = []
    for g in groups:
        cols += [c for c in GROUPS[g] if c not in cols]
    if "client" in groups:
        cols += ["client_name", "team"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*cols, *FIELDS])
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in (*cols, *FIELDS)])
    resp = Response(out.getvalue(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = 'attachment; filename="keyrelay-usage.csv"'
    return resp


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    # a cell a spreadsheet would run as a formula (names come from operators and clients)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
