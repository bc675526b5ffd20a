"""/admin/api/keys: upstream keys added, imported, tested and removed at runtime (routes on
``proxy.api.admin.api``: bearer admin token). The work is ``proxy.keys.runtime.RuntimeKeys``.

``POST /admin/api/keys`` ``{provider, key, label?, weight?, project?}`` → 201 ``{id, hint, key: {...}}``
(never the secret); ``POST /admin/api/keys/import`` ``{provider, keys: "<newline- or comma-separated>"}``
→ ``{added, duplicates, invalid, ids, invalid_lines: [{line, reason}]}``; ``POST /admin/api/keys/{id}/test``
→ ``{ok, outcome, latency_ms, error}``; ``DELETE /admin/api/keys/{id}`` → ``{id, removed: true}`` (409
``config_key`` for a key from the config file). No secret key set → 409 ``secret_key_not_set``. Audited:
``add``, ``import``, ``test``, ``remove``, ``set_label``.
"""
from __future__ import annotations

from flask import Response, jsonify

from proxy.api.admin import actor, api, one_key
from proxy.api.common import gateway, read_json
from proxy.errors import BadRequest, GatewayError, NotFound
from proxy.keys.runtime import RuntimeKeyError

ADD_FIELDS = {"provider", "key", "label", "weight", "project"}
IMPORT_FIELDS = {"provider", "keys"}


def refused(exc: RuntimeKeyError) -> GatewayError:
    if exc.status == 400:
        return BadRequest(exc.message, code=exc.code, param=exc.param)
    return GatewayError(exc.message, status=exc.status, code=exc.code, param=exc.param)


def not_found(kid: str) -> NotFound:
    return NotFound(f"No key with id {kid!r}. GET /admin/api/keys lists the keys.", code="key_not_found")


def body_with(allowed: set[str]) -> dict:
    body = read_json()
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}: expected {', '.join(sorted(allowed))}.",
                         param=unknown[0])
    return body


@api.post("/keys")
def add_key() -> tuple[Response, int]:
    body = body_with(ADD_FIELDS)
    try:
        added = gateway().runtime.add(body.get("provider"), body.get("key"), actor(), label=body.get("label"),
                                      weight=body.get("weight", 1.0), project=body.get("project"))
    except RuntimeKeyError as exc:
        raise refused(exc) from None
    return jsonify({"id": added["id"], "hint": added["hint"], "key": one_key(added["id"])}), 201


@api.post("/keys/import")
def import_keys() -> Response:
    body = body_with(IMPORT_FIELDS)
    if "keys" not in body:
        raise BadRequest("Missing 'keys': the keys, separated by newlines or commas.", param="keys",
                         code="missing_required_parameter")
    try:
        return jsonify(gateway().runtime.import_keys(body.get("provider"), body["keys"], actor()))
    except RuntimeKeyError as exc:
        raise refused(exc) from None


@api.post("/keys/<kid>/test")
def test_key(kid: str) -> Response:
    gw = gateway()
    try:
        return jsonify(gw.runtime.test(kid, gw.probe, actor()))
    except KeyError:
        raise not_found(kid) from None
    except RuntimeKeyError as exc:
        raise refused(exc) from None


@api.delete("/keys/<kid>")
def remove_key(kid: str) -> Response:
    try:
        gateway().runtime.remove(kid, actor())
    except KeyError:
        raise not_found(kid) from None
    except RuntimeKeyError as exc:
        raise refused(exc) from None
    return jsonify({"id": kid, "removed": True})
