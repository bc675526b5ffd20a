"""/admin/api/clients: client keys at runtime (routes on ``proxy.api.admin.api``: bearer admin token).

``POST /admin/api/clients`` → 201 ``{"client": {...}, "key": "kr-..."}`` (the only time the key is shown,
with rotate); ``GET /admin/api/clients``; ``GET|PATCH /admin/api/clients/{id}``;
``POST /admin/api/clients/{id}/revoke``; ``POST /admin/api/clients/{id}/rotate`` (``{"grace_s": N}``,
default 0) → ``{"client", "key"}``. 400 names the field, 404 ``client_not_found``, 409 ``client_exists``
(name taken), ``config_client`` (clients from the config file are read-only here) or ``client_revoked``.
Every change is audited (``client_*`` actions in ``GET /admin/api/audit``, the client id in before/after).
"""
from __future__ import annotations

from flask import Response, jsonify

from proxy.api.admin import actor, api
from proxy.api.common import gateway, read_json
from proxy.clients.registry import ClientRegistry, _bad, client_view


def registry() -> ClientRegistry:
    return gateway().clients.auth.registry


@api.get("/clients")
def list_clients() -> Response:
    return jsonify({"clients": [client_view(c) for c in registry().list()]})


@api.post("/clients")
def create_client() -> Response:
    client, key = registry().create(read_json(), actor())
    resp = jsonify({"client": client_view(client), "key": key})
    resp.status_code = 201
    resp.headers["Location"] = f"/admin/api/clients/{client.id}"
    return resp


@api.get("/clients/<cid>")
def get_client(cid: str) -> Response:
    return jsonify({"client": client_view(registry().get(cid))})


@api.patch("/clients/<cid>")
def patch_client(cid: str) -> Response:
    return jsonify({"client": client_view(registry().patch(cid, read_json(), actor()))})


@api.post("/clients/<cid>/revoke")
def revoke_client(cid: str) -> Response:
    return jsonify({"client": client_view(registry().revoke(cid, actor()))})


@api.post("/clients/<cid>/rotate")
def rotate_client(cid: str) -> Response:
    body = read_json(required=False)
    unknown = sorted(set(body) - {"grace_s"})
    if unknown:
        raise _bad(unknown[0], "unknown field; rotate takes only 'grace_s'")
    client, key = registry().rotate(cid, body.get("grace_s", 0), actor())
    return jsonify({"client": client_view(client), "key": key})
